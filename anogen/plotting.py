"""Small, dependency-free charts (loss curves) drawn with OpenCV for reports."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str = "",
               width: int = 640, height: int = 360, log_y: bool = False) -> np.ndarray:
    """Draw named (x, y) series on one chart; returns an RGB uint8 image."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 30, 40
    points = [(x, y) for values in series.values() for x, y in values if math.isfinite(y) and (y > 0 or not log_y)]
    if not points:
        cv2.putText(canvas, "no data", (width // 2 - 40, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                    cv2.LINE_AA)
        return canvas

    def transform(y: float) -> float:
        return math.log10(y) if log_y else y

    xs = [p[0] for p in points]
    ys = [transform(p[1]) for p in points]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y_lo, y_hi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        px = left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)
        py = height - bottom - (transform(y) - y_lo) / (y_hi - y_lo) * (height - top - bottom)
        return int(round(px)), int(round(py))

    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (180, 180, 180), 1)
    for frac in (0.0, 0.5, 1.0):
        value = y_lo + frac * (y_hi - y_lo)
        label = f"{10 ** value:.3g}" if log_y else f"{value:.3g}"
        y_pix = int(height - bottom - frac * (height - top - bottom))
        cv2.putText(canvas, label, (5, y_pix + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(canvas, f"{x_lo:g}", (left, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(canvas, f"{x_hi:g}", (width - right - 40, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1,
                cv2.LINE_AA)
    if title:
        cv2.putText(canvas, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for index, (name, values) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        pts = [to_pixel(x, y) for x, y in values if math.isfinite(y) and (y > 0 or not log_y)]
        if len(pts) > 1:
            cv2.polylines(canvas, [np.array(pts, np.int32)], False, colour, 1, cv2.LINE_AA)
        cv2.putText(canvas, name, (width - right - 150, top + 18 + 16 * index), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    return canvas


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean, so noisy per-step losses read as a trend."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
