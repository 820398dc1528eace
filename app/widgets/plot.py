"""A small line plot drawn with QPainter (loss curves, ROC and PR curves).

No matplotlib: the plot repaints in well under a millisecond for thousands of points,
so it can follow a training run live.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app import theme

if TYPE_CHECKING:
    import numpy as np

MAX_DRAWN_POINTS = 2000


@dataclass
class Series:
    name: str
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    color: QColor | None = None


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def tick_labels(values: Sequence[float]) -> list[str]:
    """Labels for axis ticks, with as few significant digits as keep neighbours apart:
    a loss between 1.205 and 1.215 reads 1.205, 1.21, 1.215, never 1.21 twice. Whole
    numbers up to a million (steps) are written out in full."""
    if all(float(v).is_integer() and abs(v) < 1e6 for v in values):
        return [str(int(v)) for v in values]
    for digits in range(3, 10):
        labels = [f"{v:.{digits}g}" for v in values]
        if all(a != b for a, b in zip(labels, labels[1:])):
            return labels
    return labels


class PlotWidget(QWidget):
    """Line series on linear axes, with a legend; optional log-scale y for losses."""

    def __init__(self, title: str = "", *, x_label: str = "", y_label: str = "", log_y: bool = False,
                 fixed_range: tuple[float, float, float, float] | None = None, diagonal: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.x_label = x_label
        self.y_label = y_label
        self.log_y = log_y
        self.fixed_range = fixed_range  # x0, x1, y0, y1
        self.diagonal = diagonal
        self._series: dict[str, Series] = {}
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:
        return QSize(300, 170)

    # ------------------------------------------------------------------ data
    def clear(self) -> None:
        self._series.clear()
        self.update()

    def series(self) -> dict[str, Series]:
        return self._series

    def set_series(self, name: str, xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray) -> None:
        s = self._series.setdefault(name, Series(name))
        s.xs, s.ys = [float(x) for x in xs], [float(y) for y in ys]
        self.update()

    def add_point(self, name: str, x: float, y: float) -> None:
        if not math.isfinite(y):
            return
        s = self._series.setdefault(name, Series(name))
        s.xs.append(float(x))
        s.ys.append(float(y))
        self.update()

    # ------------------------------------------------------------------ painting
    def _y(self, value: float) -> float:
        return math.log10(max(value, 1e-12)) if self.log_y else value

    def paintEvent(self, event: QPaintEvent) -> None:
        colors = theme.colors()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.fillRect(self.rect(), colors.base)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        top = metrics.height() + 6 if self.title else 6
        plot = QRectF(50, top, self.width() - 60, self.height() - top - metrics.height() - 10)
        if plot.width() < 20 or plot.height() < 20:
            return
        if self.title:
            painter.setPen(colors.text)
            painter.drawText(QRectF(0, 2, self.width(), metrics.height() + 2), Qt.AlignmentFlag.AlignHCenter,
                             self.title)

        points = [(x, self._y(y)) for s in self._series.values() for x, y in zip(s.xs, s.ys)]
        if self.fixed_range is not None:
            x0, x1, y0, y1 = self.fixed_range
        elif points:
            x0, x1 = _nice_range(min(p[0] for p in points), max(p[0] for p in points))
            y0, y1 = _nice_range(min(p[1] for p in points), max(p[1] for p in points))
        else:
            x0, x1, y0, y1 = 0.0, 1.0, 0.0, 1.0

        def to_screen(x: float, y: float) -> QPointF:
            return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                           plot.bottom() - (y - y0) / (y1 - y0) * plot.height())

        # Frame, grid and tick labels.
        grid_pen = QPen(colors.grid, 1)
        painter.setPen(grid_pen)
        painter.drawRect(plot)
        painter.setPen(colors.muted)
        y_ticks = [y0 + (y1 - y0) * i / 4 for i in range(5)]
        y_values = [10 ** fy for fy in y_ticks] if self.log_y else y_ticks
        for fy, label in zip(y_ticks, tick_labels(y_values)):
            p = to_screen(x0, fy)
            painter.setPen(grid_pen)
            painter.drawLine(QPointF(plot.left(), p.y()), QPointF(plot.right(), p.y()))
            painter.setPen(colors.muted)
            painter.drawText(QRectF(0, p.y() - 8, 46, 16),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        x_ticks = [x0 + (x1 - x0) * i / 4 for i in range(4 if self.x_label else 5)]  # the axis name takes
        whole_xs = all(float(x).is_integer() for s in self._series.values() for x in s.xs)  # the last tick's place
        if whole_xs and x1 - x0 >= 4:  # steps: ticks on whole steps, not 15.8
            x_ticks = sorted({float(round(x)) for x in x_ticks})
        for fx, label in zip(x_ticks, tick_labels(x_ticks)):
            p = to_screen(fx, y0)
            painter.drawText(QRectF(p.x() - 30, plot.bottom() + 2, 60, metrics.height()),
                             Qt.AlignmentFlag.AlignHCenter, label)
        if self.x_label:
            painter.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), metrics.height()),
                             Qt.AlignmentFlag.AlignRight, self.x_label)
        if self.diagonal:
            pen = QPen(colors.grid, 1, Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawLine(to_screen(x0, y0), to_screen(x1, y1))

        # Series.
        painter.setClipRect(plot.adjusted(-1, -1, 1, 1))
        legend: list[tuple[str, QColor]] = []
        for index, s in enumerate(self._series.values()):
            if not s.xs:
                continue
            color = s.color or colors.curve[index % len(colors.curve)]
            legend.append((s.name, color))
            stride = max(1, len(s.xs) // MAX_DRAWN_POINTS)
            path = QPainterPath()
            for i in range(0, len(s.xs), stride):
                p = to_screen(s.xs[i], self._y(s.ys[i]))
                path.lineTo(p) if i else path.moveTo(p)
            if len(s.xs) == 1:
                painter.setBrush(color)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.drawEllipse(to_screen(s.xs[0], self._y(s.ys[0])), 2.5, 2.5)
                painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(color, 1.6))
            painter.drawPath(path)
        painter.setClipping(False)

        # Legend, top right inside the plot.
        y = plot.top() + 4
        for name, color in legend:
            width = metrics.horizontalAdvance(name)
            x = plot.right() - width - 22
            painter.setPen(QPen(color, 2))
            painter.drawLine(QPointF(x, y + metrics.height() / 2), QPointF(x + 12, y + metrics.height() / 2))
            painter.setPen(colors.text)
            painter.drawText(QPointF(x + 16, y + metrics.ascent()), name)
            y += metrics.height()
        painter.end()
