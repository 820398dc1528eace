"""The SSIM and focal losses against their reference definitions, re-derived here in
NumPy (float64, explicit windows and sums, no torch convolution), so a port error in
anogen.detection.losses cannot hide in a shared implementation.

The reference definitions (DRAEM's ``loss.py`` and DeSTSeg's ``focal_loss``):

* SSIM: an 11x11 Gaussian window (sigma 1.5, normalised), zero padding of 5 pixels,
  local means mu, variances sigma^2 = E[x^2] - mu^2 and covariance likewise;
  SSIM = (2 mu_a mu_b + C1)(2 sigma_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2)),
  C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1 for images in [0, 1]; the loss is 1 - mean SSIM.
* DRAEM's focal loss on softmax probabilities: the one-hot target clamped to
  [smooth / (C - 1), 1 - smooth], p_t = sum_c onehot_c p_c + smooth,
  loss = -(1 - p_t)^gamma log p_t per pixel, averaged (smooth = 1e-5, gamma = 2).
* DeSTSeg's focal loss on a sigmoid map: BCE(p, t) (1 - p_t)^gamma, p_t = p t + (1 - p)(1 - t),
  averaged (gamma = 4).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anogen.detection.losses import binary_focal_loss, softmax_focal_loss, ssim_loss, ssim_map


def reference_ssim_map(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5,
                       value_range: float = 1.0) -> np.ndarray:
    """SSIM per pixel of (C, H, W) float64 images, window by window."""
    offsets = np.arange(size) - size // 2
    gauss = np.exp(-offsets.astype(np.float64) ** 2 / (2 * sigma**2))
    gauss /= gauss.sum()
    weights = np.outer(gauss, gauss)
    pad = size // 2
    c1, c2 = (0.01 * value_range) ** 2, (0.03 * value_range) ** 2
    channels, height, width = a.shape
    padded_a = np.pad(a, ((0, 0), (pad, pad), (pad, pad)))
    padded_b = np.pad(b, ((0, 0), (pad, pad), (pad, pad)))
    out = np.empty_like(a)
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                wa = padded_a[c, y:y + size, x:x + size]
                wb = padded_b[c, y:y + size, x:x + size]
                mu_a, mu_b = (weights * wa).sum(), (weights * wb).sum()
                var_a = (weights * wa * wa).sum() - mu_a**2
                var_b = (weights * wb * wb).sum() - mu_b**2
                cov = (weights * wa * wb).sum() - mu_a * mu_b
                out[c, y, x] = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / \
                    ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return out


def reference_softmax_focal(probabilities: np.ndarray, target: np.ndarray, gamma: float = 2.0,
                            smooth: float = 1e-5) -> np.ndarray:
    """Per-pixel focal loss of (N, C, H, W) probabilities and (N, H, W) class indices."""
    n, classes, height, width = probabilities.shape
    out = np.empty((n, height, width))
    for i in range(n):
        for y in range(height):
            for x in range(width):
                p_t = smooth
                for c in range(classes):
                    one_hot = 1.0 if c == target[i, y, x] else 0.0
                    one_hot = min(max(one_hot, smooth / (classes - 1)), 1.0 - smooth)
                    p_t += one_hot * probabilities[i, c, y, x]
                out[i, y, x] = -((1.0 - p_t) ** gamma) * np.log(p_t)
    return out


def reference_binary_focal(p: np.ndarray, t: np.ndarray, gamma: float = 4.0) -> np.ndarray:
    bce = -(t * np.log(p) + (1.0 - t) * np.log(1.0 - p))
    p_t = p * t + (1.0 - p) * (1.0 - t)
    return bce * (1.0 - p_t) ** gamma


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(13)


def test_ssim_matches_the_reference_formula(rng):
    a = rng.random((2, 3, 13, 17))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    b[1, :, 4:9, 6:12] = 0.0  # a blacked-out patch: low SSIM there
    ours = ssim_map(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    reference = np.stack([reference_ssim_map(a[i], b[i]) for i in range(2)])
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)
    expected = 1.0 - reference.mean()
    assert float(ssim_loss(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(expected, abs=1e-12)
    assert float(ssim_loss(torch.from_numpy(a), torch.from_numpy(a))) == pytest.approx(0.0, abs=1e-12)
    # float32, as training runs it, agrees to float32 precision.
    ours32 = ssim_map(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()
    np.testing.assert_allclose(ours32, reference, atol=2e-5)


def test_softmax_focal_matches_draem_focal_loss(rng):
    logits = rng.normal(0, 3, (2, 2, 6, 7))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    target = (rng.random((2, 6, 7)) < 0.3).astype(np.float64)
    probabilities[0, :, 0, 0] = (1.0, 0.0)  # a confidently wrong pixel when the target is 1
    target[0, 0, 0] = 1.0
    reference = reference_softmax_focal(probabilities, target)
    for gamma in (2.0, 0.0, 4.0):
        ours = softmax_focal_loss(torch.from_numpy(probabilities), torch.from_numpy(target)[:, None],
                                  gamma=gamma).numpy()[:, 0]
        np.testing.assert_allclose(ours, reference_softmax_focal(probabilities, target, gamma), rtol=1e-9, atol=1e-14)
    assert np.isfinite(reference).all() and reference[0, 0, 0] > 10  # large but finite (smooth)


def test_binary_focal_matches_destseg_focal_loss(rng):
    p = rng.uniform(0.01, 0.99, (3, 1, 5, 8))
    t = (rng.random(p.shape) < 0.4).astype(np.float64)
    ours = binary_focal_loss(torch.from_numpy(p), torch.from_numpy(t), gamma=4.0).double().numpy()
    # binary_focal_loss computes in float32 (as the reference casts with .float()).
    np.testing.assert_allclose(ours, reference_binary_focal(p, t, 4.0), rtol=1e-5, atol=1e-7)


def test_training_losses_stay_fp32_inside_the_cpus_bf16_autocast():
    # On a CPU with native bf16, training runs the networks under bf16 autocast. SSIM computed
    # in bf16 read 0.0 for a near match and DRAEM's loss went NaN at step 1 of the full demo.
    from anogen.detection.destseg.loss import head_loss
    from anogen.detection.draem.loss import draem_loss

    generator = torch.Generator().manual_seed(3)
    clean = torch.rand(2, 3, 32, 32, generator=generator)
    # The networks' outputs arrive in bf16; the losses must treat them as fp32 numbers.
    reconstruction = (clean + 0.01 * torch.randn(clean.shape, generator=generator)).clamp(0, 1).bfloat16()
    probabilities = torch.softmax(4 * torch.randn(2, 2, 32, 32, generator=generator), dim=1).bfloat16()
    mask = (torch.rand(2, 1, 32, 32, generator=generator) > 0.8).float()
    weak = torch.tensor([True, False])
    expected_total, expected = draem_loss(reconstruction.float(), clean, probabilities.float(), mask, weak, tau=0.9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = draem_loss(reconstruction, clean, probabilities, mask, weak, tau=0.9)
    assert total.dtype == torch.float32
    assert expected["ssim"] > 1e-4  # a near match, not a perfect one
    for name, value in expected.items():
        assert parts[name] == pytest.approx(value, rel=1e-5), name

    probability = probabilities[:, 1:2]
    expected_head, _ = head_loss(probability.float(), mask, weak, tau=0.9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        head, _ = head_loss(probability, mask, weak, tau=0.9)
    assert head.dtype == torch.float32 and float(head) == pytest.approx(float(expected_head), rel=1e-5)
