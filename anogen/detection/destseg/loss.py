"""DeSTSeg's two losses, one per training phase.

* student phase: cosine distance between the student's features of the (corrupted)
  image and the teacher's features of the clean image; never masked.
* head phase: focal (gamma 4) + L1 between the segmentation map and the mask at the
  map's 1/4 resolution, both filtered by the weak box keep mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anogen.detection.losses import binary_focal_loss, cosine_distillation_loss, in_fp32, l1_loss
from anogen.detection.weak import apply_keep, keep_mask


@in_fp32
def student_loss(student_features: list[torch.Tensor],
                 teacher_features: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    loss = cosine_distillation_loss(student_features, teacher_features)
    value = float(loss.detach())
    return loss, {"cosine": value, "total": value}


def mask_at(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """A {0,1} mask resized to the segmentation resolution (bilinear, then >= 0.5)."""
    resized = F.interpolate(mask.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return (resized >= 0.5).float()


@in_fp32
def head_loss(probability: torch.Tensor, mask: torch.Tensor, weak: torch.Tensor, *, tau: float,
              weak_all: bool = False, focal_gamma: float = 4.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``probability`` (B,1,h,w) sigmoid of the head at 1/4 resolution; ``mask`` (B,1,H,W)."""
    target = mask_at(mask, probability.shape[2:])
    keep = keep_mask(probability, target, tau)
    focal = apply_keep(binary_focal_loss(probability, target, gamma=focal_gamma), keep, weak, weak_all)
    l1 = apply_keep(l1_loss(probability, target), keep, weak, weak_all)
    total = focal + l1
    return total, {"focal": float(focal.detach()), "l1": float(l1.detach()), "total": float(total.detach())}
