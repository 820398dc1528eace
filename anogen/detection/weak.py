"""The tau-filtered box loss of stage 3 (the paper's eqs. 8-9).

A generated defect comes with a box, not a pixel mask: most pixels inside the box are
really normal. Training the segmentation head to call all of them anomalous teaches it
to paint boxes. The filter drops, from the segmentation loss, the box pixels the model
already calls normal with probability >= tau; pixels outside the box keep the normal
loss. tau = 1.0 switches the filter off (plain box supervision).

As in the authors' code, the kept loss is averaged over *all* pixels (dropped pixels
count as zero), not over the kept ones, so a sample's weight does not grow when most of
its box is dropped.
"""

from __future__ import annotations

import torch

from anogen.errors import InputError

__all__ = ["keep_mask", "apply_keep"]


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not 0.0 < tau <= 1.0:
        raise InputError(f"tau must be in (0, 1], got {tau}")
    return tau


def keep_mask(p_anomaly: torch.Tensor, box_mask: torch.Tensor, tau: float) -> torch.Tensor:
    """Which pixels keep their segmentation loss: float {0, 1}, shape (B,1,H,W).

    ``p_anomaly``: (B,1,H,W) the model's anomaly probability (detached here: the filter
    is a label choice, not something to back-propagate through).
    ``box_mask``: (B,1,H,W) 1 inside the box, 0 outside.
    A pixel is kept when it lies outside the box, or when the model does not yet call it
    normal with probability >= tau, i.e. ``p_anomaly > 1 - tau``.
    """
    tau = _check_tau(tau)
    if p_anomaly.shape != box_mask.shape:
        raise InputError(f"p_anomaly shape {tuple(p_anomaly.shape)} != box_mask shape {tuple(box_mask.shape)}")
    if p_anomaly.dim() != 4 or p_anomaly.shape[1] != 1:
        raise InputError(f"expected (B,1,H,W) maps, got shape {tuple(p_anomaly.shape)}")
    p = p_anomaly.detach()
    dtype = p.dtype if p.is_floating_point() else torch.float32
    if tau >= 1.0:
        # Plain box supervision: "p >= 0 normal probability" would still drop pixels
        # with p_anomaly exactly 0, so tau = 1 is spelled out as keep-everything.
        return torch.ones_like(p, dtype=dtype)
    outside_box = box_mask.detach() < 0.5
    return (outside_box | (p > 1.0 - tau)).to(dtype)


def apply_keep(per_pixel_loss: torch.Tensor, keep: torch.Tensor, weak: torch.Tensor,
               weak_all: bool = False) -> torch.Tensor:
    """Mean over all pixels of the loss, with ``keep`` applied to the weak samples.

    ``per_pixel_loss``: (B,C,H,W) (C is usually 1) unreduced segmentation loss.
    ``keep``: (B,1,H,W) from :func:`keep_mask`, broadcast over channels.
    ``weak``: (B,) bool, True for samples labelled with a box.
    ``weak_all``: apply ``keep`` to every sample, as the reference code did.
    Returns a scalar tensor; gradients flow through ``per_pixel_loss`` only.
    """
    if per_pixel_loss.dim() != 4:
        raise InputError(f"expected a (B,C,H,W) per-pixel loss, got shape {tuple(per_pixel_loss.shape)}")
    batch, _, height, width = per_pixel_loss.shape
    if keep.shape != (batch, 1, height, width):
        raise InputError(f"keep shape {tuple(keep.shape)} does not match loss shape {tuple(per_pixel_loss.shape)}")
    if weak.shape != (batch,):
        raise InputError(f"weak must have shape ({batch},), got {tuple(weak.shape)}")
    keep = keep.detach().to(per_pixel_loss.dtype)
    if not weak_all:
        # Strongly labelled samples (pixel masks from synthesis) keep every pixel.
        applies = weak.to(device=keep.device, dtype=torch.bool).view(batch, 1, 1, 1)
        keep = torch.where(applies, keep, torch.ones_like(keep))
    return (per_pixel_loss * keep).mean()
