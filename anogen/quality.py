"""Weight-free measures of generated images: do they look like real defects?

Every function takes RGB ``uint8`` images (``H x W x 3``) and returns plain floats, so
the demo report, the benchmarks and the tests share one definition of each number.

* :func:`psnr` and :func:`ssim`: reconstruction fidelity (the VAE keeps detail);
* :func:`changed_fraction`: the share of a box that changed visibly. A real hole
  covers part of its box, not all of it; a flat blurred patch changes all of it;
* :func:`sharpness_ratio`: Laplacian variance inside the box, generated vs source.
  Below about 0.7 the box was blurred, whatever was painted in it;
* :func:`sliced_wasserstein`: distance between two sets of images as in ProGAN
  (Karras et al. 2018): 7x7 patches of each Laplacian-pyramid level, compared with
  random 1-D projections. Lower is closer; two disjoint real sets give the floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

VISIBLE_CHANGE = 24  # 8-bit levels, max over channels: about what an inspector notices


def _float(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (8-bit peak); only ``mask`` pixels when given."""
    diff = (_float(reference) - _float(test)) ** 2
    if mask is not None:
        selected = np.asarray(mask, bool)
        if not selected.any():
            raise ValueError("psnr: the mask selects no pixel")
        diff = diff[selected]
    mse = float(diff.mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5),
    on the luma of RGB images or on a grey image."""
    a, b = _luma(reference), _luma(test)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


def _luma(image: np.ndarray) -> np.ndarray:
    image = _float(image)
    if image.ndim == 3:
        image = image @ np.array([0.299, 0.587, 0.114])
    return image


def _box_region(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty box {tuple(box)}")
    return np.asarray(image)[y0:y1, x0:x1]


def changed_fraction(source: np.ndarray, generated: np.ndarray, box: Sequence[int],
                     threshold: int = VISIBLE_CHANGE) -> float:
    """Share of the pixels of ``box`` (x0, y0, x1, y1) that differ visibly from ``source``."""
    before, after = _box_region(source, box), _box_region(generated, box)
    diff = np.abs(_float(after) - _float(before))
    if diff.ndim == 3:
        diff = diff.max(axis=2)
    return float((diff > threshold).mean())


def laplacian_variance(image: np.ndarray) -> float:
    return float(cv2.Laplacian(_luma(image), cv2.CV_64F).var())


def sharpness_ratio(source: np.ndarray, generated: np.ndarray, box: Sequence[int]) -> float:
    """Laplacian variance of the generated box over that of the same region of the source."""
    before = laplacian_variance(_box_region(source, box))
    after = laplacian_variance(_box_region(generated, box))
    return after / max(before, 1e-9)


# ----------------------------------------------------------------------------- SWD

@dataclass
class SlicedWasserstein:
    """SWD per Laplacian-pyramid level (finest first) and their mean, both x 1000."""

    per_level: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_level))


def _laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    current = _float(image).astype(np.float32)
    pyramid: list[np.ndarray] = []
    for _ in range(levels - 1):
        smaller: np.ndarray = cv2.pyrDown(current)
        pyramid.append(current - cv2.pyrUp(smaller, dstsize=(current.shape[1], current.shape[0])))
        current = smaller
    pyramid.append(current)
    return pyramid


def _patches(level: np.ndarray, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    height, width = level.shape[:2]
    ys = rng.integers(0, height - size + 1, count)
    xs = rng.integers(0, width - size + 1, count)
    return np.stack([level[y:y + size, x:x + size].reshape(-1) for y, x in zip(ys, xs)])


def _pyramid_patches(images: Sequence[np.ndarray], levels: int, per_image: int, size: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    gathered: list[list[np.ndarray]] = [[] for _ in range(levels)]
    for image in images:
        for level, band in enumerate(_laplacian_pyramid(image, levels)):
            gathered[level].append(_patches(band, per_image, size, rng))
    return [np.concatenate(parts) for parts in gathered]


def _normalise(patches: np.ndarray, reference: np.ndarray, channels: int) -> np.ndarray:
    # Per channel, so every level weighs the same. ProGAN normalises each set by its
    # own statistics; that hides a loss of contrast (a blur), so both sets use the
    # real set's statistics here.
    shaped = patches.reshape(len(patches), -1, channels)
    ref = reference.reshape(len(reference), -1, channels)
    mean = ref.mean(axis=(0, 1), keepdims=True)
    std = ref.std(axis=(0, 1), keepdims=True) + 1e-8
    return ((shaped - mean) / std).reshape(len(patches), -1)


def _swd(a: np.ndarray, b: np.ndarray, directions: int, repeats: int, rng: np.random.Generator) -> float:
    results = []
    for _ in range(repeats):
        projection = rng.standard_normal((a.shape[1], directions))
        projection /= np.sqrt((projection**2).sum(axis=0, keepdims=True))
        pa, pb = np.sort(a @ projection, axis=0), np.sort(b @ projection, axis=0)
        results.append(np.abs(pa - pb).mean())
    return float(np.mean(results))


def sliced_wasserstein(real: Sequence[np.ndarray], fake: Sequence[np.ndarray], *, levels: int = 3,
                       patch: int = 7, patches_per_image: int = 64, directions: int = 512, repeats: int = 4,
                       seed: int = 0) -> SlicedWasserstein:
    """ProGAN's sliced Wasserstein distance between two equally sized sets of images.

    ``levels`` pyramid levels (3 suits 64 px images: 64, 32, 16), ``patch`` x ``patch``
    neighbourhoods, ``patches_per_image`` random patches of each level of each image.
    """
    if len(real) != len(fake) or not len(real):
        raise ValueError(f"sliced_wasserstein needs two non-empty sets of one size, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    channels = np.asarray(real[0]).shape[2] if np.asarray(real[0]).ndim == 3 else 1
    real_levels = _pyramid_patches(real, levels, patches_per_image, patch, rng)
    fake_levels = _pyramid_patches(fake, levels, patches_per_image, patch, rng)
    per_level = []
    for a, b in zip(real_levels, fake_levels):
        distance = _swd(_normalise(a, a, channels), _normalise(b, a, channels), directions, repeats, rng)
        per_level.append(1000.0 * distance)
    return SlicedWasserstein(per_level)
