"""The weight-free image measures used by the demo report and the model benchmarks."""

import cv2
import numpy as np
import pytest

from anogen.quality import changed_fraction, psnr, sharpness_ratio, sliced_wasserstein, ssim


def _texture(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size]
    weave = 128 + 60 * np.sin(xs * 1.3 + rng.uniform(0, 6)) * np.cos(ys * 1.1 + rng.uniform(0, 6))
    noise = rng.normal(0, 8, (size, size))
    grey = np.clip(weave + noise, 0, 255)
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)


def test_psnr_matches_the_formula_and_respects_the_mask():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[:4] = 110  # error 10 on half the pixels
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 50))
    top = np.zeros((8, 8), bool)
    top[:4] = True
    assert psnr(a, b, top) == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr(a, b, ~top) == float("inf")
    with pytest.raises(ValueError):
        psnr(a, b, np.zeros((8, 8), bool))


def test_ssim_is_one_for_identical_images_and_drops_with_blur():
    image = _texture(0)
    assert ssim(image, image) == pytest.approx(1.0)
    blurred = cv2.GaussianBlur(image, (7, 7), 2.0)
    assert ssim(image, blurred) < 0.8


def test_changed_fraction_counts_only_visible_changes_inside_the_box():
    source = _texture(1)
    hole = source.copy()
    hole[20:30, 20:30] = 0  # 100 of the 400 pixels of the box below
    box = (15, 15, 35, 35)
    assert changed_fraction(source, hole, box) == pytest.approx(0.25, abs=0.02)
    faint = np.clip(source.astype(int) + 5, 0, 255).astype(np.uint8)
    assert changed_fraction(source, faint, box) == 0.0


def test_sharpness_ratio_flags_a_blurred_box():
    source = _texture(2)
    blurred = source.copy()
    blurred[10:50, 10:50] = cv2.GaussianBlur(source, (9, 9), 3.0)[10:50, 10:50]
    box = (10, 10, 50, 50)
    assert sharpness_ratio(source, source, box) == pytest.approx(1.0)
    assert sharpness_ratio(source, blurred, box) < 0.3


def test_sliced_wasserstein_separates_blurred_from_real_sets():
    real_a = [_texture(s) for s in range(16)]
    real_b = [_texture(100 + s) for s in range(16)]
    blurred = [cv2.GaussianBlur(image, (7, 7), 2.0) for image in real_b]
    floor = sliced_wasserstein(real_a, real_b, patches_per_image=32)
    blur = sliced_wasserstein(real_a, blurred, patches_per_image=32)
    assert len(floor.per_level) == 3
    assert blur.mean > 3 * floor.mean
    assert blur.per_level[0] > floor.per_level[0]
    with pytest.raises(ValueError):
        sliced_wasserstein(real_a, real_b[:3])
