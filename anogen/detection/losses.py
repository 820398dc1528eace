"""Loss functions shared by DRAEM and DeSTSeg.

Segmentation losses return a per-pixel map (``reduction="none"`` in torch terms) so the
weak box filter (:mod:`anogen.detection.weak`) can drop pixels before averaging;
reconstruction and distillation losses return a scalar because they are never masked.

Losses run in fp32 even inside the CPU's bf16 autocast (:func:`in_fp32`): bf16 keeps 8 bits
of mantissa, so SSIM's variance terms cancel to nothing (the loss read 0.0 for a near
match) or go negative, and DRAEM's training loss became NaN at step 1 on a CPU with native bf16.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

LossFn = TypeVar("LossFn", bound=Callable[..., Any])


def _as_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_as_fp32(v) for v in value)
    return value


def in_fp32(loss: LossFn) -> LossFn:
    """``loss`` with its tensor arguments (and lists of them) cast to fp32 and autocast off:
    the networks may run in bf16, their losses may not."""

    @functools.wraps(loss)
    def full_precision(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", enabled=False):
            return loss(*_as_fp32(args), **{k: _as_fp32(v) for k, v in kwargs.items()})

    return full_precision  # type: ignore[return-value]


def softmax_focal_loss(probabilities: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       smooth: float = 1e-5) -> torch.Tensor:
    """Focal loss on class probabilities, per pixel.

    ``probabilities`` (B,C,H,W) already softmaxed; ``target`` (B,1,H,W) class indices
    (a {0,1} mask for C = 2). Returns (B,1,H,W). As in DRAEM's loss, the one-hot target
    is smoothed to [smooth, 1 - smooth] and ``smooth`` is added to p_t before the log, so
    a confident wrong pixel costs a large but finite amount.
    """
    num_classes = probabilities.shape[1]
    one_hot = F.one_hot(target[:, 0].long(), num_classes).permute(0, 3, 1, 2).to(probabilities.dtype)
    one_hot = one_hot.clamp(smooth / (num_classes - 1), 1.0 - smooth)
    p_t = (one_hot * probabilities).sum(dim=1, keepdim=True) + smooth
    return -((1.0 - p_t) ** gamma) * torch.log(p_t)


def binary_focal_loss(probability: torch.Tensor, target: torch.Tensor,
                      gamma: float = 4.0) -> torch.Tensor:
    """Focal loss on a sigmoid probability map, per pixel: BCE * (1 - p_t)^gamma (DeSTSeg).

    ``probability`` and ``target`` (B,1,H,W); returns (B,1,H,W).
    """
    probability = probability.float()
    target = target.float()
    bce = F.binary_cross_entropy(probability, target, reduction="none")
    p_t = probability * target + (1.0 - probability) * (1.0 - target)
    return bce * (1.0 - p_t) ** gamma


def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Absolute error per pixel, same shape as the inputs."""
    return (prediction - target).abs()


def l2_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (DRAEM's reconstruction term)."""
    return F.mse_loss(prediction, target)


def gaussian_kernel_1d(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """(size,) normalised Gaussian; its outer product with itself is the 2-D SSIM window."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    gauss = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (gauss / gauss.sum()).to(dtype=dtype, device=device)


def ssim_map(image_a: torch.Tensor, image_b: torch.Tensor, window_size: int = 11,
             sigma: float = 1.5, value_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per pixel and channel, (B,C,H,W), for images in [0, value_range].

    Local statistics come from a ``window_size`` Gaussian (sigma ``sigma``) with zero
    padding, the constants are (0.01 L)^2 and (0.03 L)^2, as in DRAEM's SSIM.
    """
    channels = image_a.shape[1]
    padding = window_size // 2
    # The Gaussian window is separable, and zero padding commutes with the split: one
    # row pass and one column pass give the 2-D window's local means with 2k instead of
    # k^2 products per pixel. The five moments share the two passes (4x faster than five
    # 2-D convolutions, forward and backward).
    moments = torch.cat([image_a, image_b, image_a * image_a, image_b * image_b, image_a * image_b], dim=1)
    count = moments.shape[1]
    gauss = gaussian_kernel_1d(window_size, sigma, image_a.dtype, image_a.device)
    rows = F.conv2d(moments, gauss.view(1, 1, 1, -1).expand(count, 1, 1, window_size),
                    padding=(0, padding), groups=count)
    local = F.conv2d(rows, gauss.view(1, 1, -1, 1).expand(count, 1, window_size, 1),
                     padding=(padding, 0), groups=count)
    mu_a, mu_b, mean_aa, mean_bb, mean_ab = local.split(channels, dim=1)
    mu_a_sq, mu_b_sq, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = mean_aa - mu_a_sq
    var_b = mean_bb - mu_b_sq
    cov_ab = mean_ab - mu_ab
    c1 = (0.01 * value_range) ** 2
    c2 = (0.03 * value_range) ** 2
    return ((2 * mu_ab + c1) * (2 * cov_ab + c2)) / ((mu_a_sq + mu_b_sq + c1) * (var_a + var_b + c2))


def ssim_loss(image_a: torch.Tensor, image_b: torch.Tensor, window_size: int = 11,
              sigma: float = 1.5) -> torch.Tensor:
    """1 - mean SSIM over all pixels and channels; 0 for identical images."""
    return 1.0 - ssim_map(image_a, image_b, window_size, sigma).mean()


def l2_normalize(features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Features divided by their L2 norm over the channel axis (DeSTSeg's normalisation)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def cosine_distance_map(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per pixel, (B,1,h,w), of two L2-normalised feature maps."""
    return 1.0 - (student * teacher).sum(dim=1, keepdim=True)


def cosine_distillation_loss(students: list[torch.Tensor], teachers: list[torch.Tensor]) -> torch.Tensor:
    """DeSTSeg's student loss: for each feature level, the per-pixel cosine distance summed
    over the batch and averaged over the pixels; then summed over levels.

    Summing (not averaging) over the batch is what the reference does and what its
    learning rate (0.4) was tuned for, so we keep it.
    """
    total = students[0].new_zeros(())
    for student, teacher in zip(students, teachers, strict=True):
        distance = cosine_distance_map(l2_normalize(student), l2_normalize(teacher))
        height, width = distance.shape[-2:]
        total = total + distance.sum() / (height * width)
    return total

