"""The context crop: one rule for where stage 1 learns a defect and stage 2 paints one.

A small defect on a large image would be a few latent cells after resizing the whole
image to the model's resolution. Both stages can instead work on a square window around
the defect's box (stage 1: the bounding box of the support mask; stage 2: the box to
paint), so a defect is painted at the scale it was learned at. The window is a square,
so resizing it to the model's square resolution never changes a defect's aspect ratio.

Neither the paper nor the reference code crops (``mode="off"``: the whole image, as the
``paper`` presets do); ``auto`` crops only where the defect is small in its image.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from anogen.errors import InputError

if TYPE_CHECKING:  # the CLI reads CROP_CHOICES without loading NumPy
    from anogen.data.box import Box

CropMode = Literal["auto", "on", "off"]
CROP_CHOICES: tuple[CropMode, ...] = ("auto", "on", "off")


def validate_crop(mode: str, context_margin: float, auto_below: float, *, what: str = "crop") -> None:
    """Check the three crop settings; InputError naming the bad one."""
    if mode not in CROP_CHOICES:
        raise InputError(f"{what} must be one of {', '.join(CROP_CHOICES)}, got {mode!r}")
    if not math.isfinite(context_margin) or context_margin < 0:
        raise InputError(f"context margin must be >= 0, got {context_margin}")
    if not 0.0 <= auto_below <= 1.0:
        raise InputError(f"auto crop threshold must be in [0, 1], got {auto_below}")


def context_window(box: Box, height: int, width: int, *, mode: str = "auto", context_margin: float = 1.0,
                   auto_below: float = 0.5) -> Box:
    """The region of a ``width`` x ``height`` image that a stage works on for ``box``.

    A square of side ``longer box side * (1 + 2 * context_margin)``, at most the image's
    shorter side, centred on the box and shifted to stay inside the image; it always holds
    the whole box. The whole image instead when ``mode="off"``; with ``"auto"`` when that
    square would reach ``auto_below`` of the image's shorter side (the defect is not
    small); and when no square fits around the box (a box longer than the image's shorter
    side).
    """
    from anogen.data.box import Box

    full = Box(0, 0, width, height)
    if mode == "off":
        return full
    if box.is_empty:
        raise InputError(f"cannot crop around the empty box {box.to_list()}")
    longer = max(box.width, box.height)
    shorter_side = min(height, width)
    side = math.ceil(longer * (1.0 + 2.0 * context_margin))
    if mode == "auto" and side >= auto_below * shorter_side:
        return full
    side = min(side, shorter_side)
    if side < longer or (side == width and side == height):
        return full

    def place(lo: int, hi: int, limit: int) -> int:
        start = round((lo + hi) / 2 - side / 2)
        start = min(max(start, 0), limit - side)
        # Rounding must never cut the box: it lies inside [start, start + side).
        return min(max(start, hi - side), lo)

    x0 = place(box.x0, box.x1, width)
    y0 = place(box.y0, box.y1, height)
    return Box(x0, y0, x0 + side, y0 + side)
