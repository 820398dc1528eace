"""DRAEM's training loss: L2 + SSIM on the reconstruction, focal on the segmentation.

Only the focal term sees the weak box filter: the reconstruction target of a generated
sample is its source good image, which is exact everywhere, so nothing there is doubtful.
"""

from __future__ import annotations

import torch

from anogen.detection.losses import in_fp32, l2_loss, softmax_focal_loss, ssim_loss
from anogen.detection.weak import apply_keep, keep_mask


@in_fp32
def draem_loss(reconstruction: torch.Tensor, clean: torch.Tensor, probabilities: torch.Tensor,
               mask: torch.Tensor, weak: torch.Tensor, *, tau: float, weak_all: bool = False,
               focal_gamma: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts.

    ``reconstruction``/``clean`` (B,3,H,W) in [0,1]; ``probabilities`` (B,2,H,W) the
    softmax of the discriminative network; ``mask`` (B,1,H,W) {0,1}; ``weak`` (B,) bool.
    """
    l2 = l2_loss(reconstruction, clean)
    ssim = ssim_loss(reconstruction, clean)
    target = (mask > 0.5).float()
    per_pixel_focal = softmax_focal_loss(probabilities, target, gamma=focal_gamma)
    keep = keep_mask(probabilities[:, 1:2], target, tau)
    focal = apply_keep(per_pixel_focal, keep, weak, weak_all)
    total = l2 + ssim + focal
    return total, {"l2": float(l2.detach()), "ssim": float(ssim.detach()), "focal": float(focal.detach()),
                   "total": float(total.detach())}
