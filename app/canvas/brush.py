"""Pixel operations of the mask tools: round brush segments and region fill.

These act on the in-memory bool mask the canvas shows; saving it is the workspace's job.
"""

from __future__ import annotations

import numpy as np

from app.canvas.history import Rect


def segment_rect(p0: tuple[float, float], p1: tuple[float, float], radius: float,
                 shape: tuple[int, int]) -> Rect | None:
    """The pixel rect a brush segment touches, clipped to ``shape`` (H, W)."""
    h, w = shape
    x0 = int(np.floor(min(p0[0], p1[0]) - radius))
    y0 = int(np.floor(min(p0[1], p1[1]) - radius))
    x1 = int(np.ceil(max(p0[0], p1[0]) + radius)) + 1
    y1 = int(np.ceil(max(p0[1], p1[1]) + radius)) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def paint_segment(mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
                  radius: float, value: bool) -> Rect | None:
    """Set every pixel whose centre lies within ``radius`` of the segment p0-p1.

    Points are in image coordinates (pixel (x, y) covers [x, x+1) x [y, y+1)). Painting
    whole segments rather than dabs leaves no gaps however fast the mouse moves.
    """
    rect = segment_rect(p0, p1, radius, mask.shape[:2])
    if rect is None:
        return None
    x0, y0, x1, y1 = rect
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    ax, ay = float(p0[0]), float(p0[1])
    dx, dy = float(p1[0]) - ax, float(p1[1]) - ay
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0)
    else:
        t = np.zeros((1, 1), dtype=np.float32)
    dist2 = (xs - (ax + t * dx)) ** 2 + (ys - (ay + t * dy)) ** 2
    inside = dist2 <= max(radius, 0.5) ** 2
    mask[y0:y1, x0:x1][inside] = value
    return rect


def fill_region(mask: np.ndarray, x: int, y: int) -> Rect | None:
    """Fill the closed unmasked region around pixel (x, y), in place.

    The region is the 4-connected set of unmasked pixels containing (x, y). A region that
    reaches the image border is not closed (filling it would paint the background), so
    nothing changes and None is returned; so it is when (x, y) is already masked.
    """
    import cv2

    h, w = mask.shape
    if not (0 <= x < w and 0 <= y < h) or mask[y, x]:
        return None
    work = mask.astype(np.uint8)
    _, _, _, (rx, ry, rw, rh) = cv2.floodFill(work, None, (int(x), int(y)), 2, 0, 0, 4)
    if rx == 0 or ry == 0 or rx + rw == w or ry + rh == h:
        return None
    region = work[ry:ry + rh, rx:rx + rw] == 2
    mask[ry:ry + rh, rx:rx + rw] |= region
    return (rx, ry, rx + rw, ry + rh)



def fill_polygon(mask: np.ndarray, points: list[tuple[float, float]], value: bool = True) -> Rect | None:
    """Set (or clear) every pixel whose centre lies inside the polygon ``points``, in place.

    Points are image coordinates like :func:`paint_segment`'s; inside is the even-odd rule,
    so an outline that crosses itself leaves its overlaps out, as drawing programs do.
    Returns the touched rect, or None when the polygon has fewer than 3 points or covers
    no pixel centre.
    """
    if len(points) < 3:
        return None
    h, w = mask.shape
    poly = np.asarray(points, dtype=np.float64)
    x0 = max(0, int(np.floor(poly[:, 0].min())))
    y0 = max(0, int(np.floor(poly[:, 1].min())))
    x1 = min(w, int(np.ceil(poly[:, 0].max())) + 1)
    y1 = min(h, int(np.ceil(poly[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    # Scanlines through the pixel centres: where the edges cross a row, sorted; the centres
    # from one crossing to the next (pairwise) are inside. Exact, and memory is one row.
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    ax, ay = poly[:, 0], poly[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    for row in range(y0, y1):
        cy = row + 0.5
        crossing = (ay <= cy) != (by <= cy)
        if not crossing.any():
            continue
        cut = np.sort(ax[crossing] + (cy - ay[crossing]) * (bx[crossing] - ax[crossing])
                      / (by[crossing] - ay[crossing]))
        for start, stop in zip(cut[0::2], cut[1::2]):
            first = max(x0, int(np.ceil(start - 0.5)))
            last = min(x1, int(np.ceil(stop - 0.5)))
            if last > first:
                inside[row - y0, first - x0:last - x0] = True
    if not inside.any():
        return None
    mask[y0:y1, x0:x1][inside] = value
    return (x0, y0, x1, y1)
