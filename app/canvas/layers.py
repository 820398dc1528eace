"""Scene items the canvas stacks on top of each other: image, mask, heat map, compare.

All items live in image pixel coordinates: scene (x, y) is the top-left corner of pixel
(x, y), so an image of W x H pixels covers the scene rect (0, 0, W, H).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPen, QPixmap, qRgba
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from app.canvas.history import Rect
from app.canvas.qimage import rgb_to_qimage

Z_IMAGE, Z_HEATMAP, Z_MASK, Z_COMPARE, Z_BOXES, Z_CURSOR = 0, 10, 20, 30, 40, 50


def _exposed(option: QStyleOptionGraphicsItem, bounds: QRectF) -> QRectF:
    rect = option.exposedRect if option.exposedRect.isValid() else bounds
    return rect.intersected(bounds)


class ImageLayer(QGraphicsItem):
    """The photo, drawn from a small mipmap so a 4000x3000 image pans smoothly zoomed out.

    Level k holds the image at 1/2**k; painting picks the coarsest level that still has
    at least one source pixel per screen pixel. Zoomed in past 200 % pixels are shown
    sharp (no smoothing), which is what one wants when painting a mask.
    """

    MIN_LEVEL_SIDE = 256

    def __init__(self, rgb: np.ndarray) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setZValue(Z_IMAGE)
        self._rgb = rgb
        self._lut: np.ndarray | None = None
        self._levels: list[QPixmap] = []
        self._build(rgb)

    def set_lut(self, lut: np.ndarray | None) -> None:
        """Show the image through a 256-entry value map (brightness/contrast); None: as it is.
        Only the pixmaps change; the image array stays what it was."""
        if lut is None and self._lut is None:
            return
        if lut is not None and self._lut is not None and np.array_equal(lut, self._lut):
            return
        self._lut = None if lut is None else np.asarray(lut, dtype=np.uint8)
        self._build(self._rgb if self._lut is None else self._lut[self._rgb])
        self.update()

    def _build(self, rgb: np.ndarray) -> None:
        image = rgb_to_qimage(rgb)
        self._size = (image.width(), image.height())
        self._levels = [QPixmap.fromImage(image)]
        level = image
        while min(level.width(), level.height()) // 2 >= self.MIN_LEVEL_SIDE and len(self._levels) < 5:
            level = level.scaled(max(1, level.width() // 2), max(1, level.height() // 2),
                                 Qt.AspectRatioMode.IgnoreAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
            self._levels.append(QPixmap.fromImage(level))

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, *self._size)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        scale = painter.worldTransform().m11() or 1.0
        level = 0
        while level + 1 < len(self._levels) and scale * (2 ** (level + 1)) <= 1.0:
            level += 1
        pixmap = self._levels[level]
        target = _exposed(option, self.boundingRect())
        factor = pixmap.width() / self._size[0]
        source = QRectF(target.x() * factor, target.y() * factor,
                        target.width() * factor, target.height() * factor)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < 2.0)
        painter.drawPixmap(target, pixmap, source)


class MaskLayer(QGraphicsItem):
    """A bool mask shown as a tinted overlay.

    The mask array stays the truth; an 8-bit indexed QImage (transparent / tint) mirrors
    it and only the rectangles that changed are copied over, so painting costs the size
    of the brush, not of the image.
    """

    def __init__(self, mask: np.ndarray, color: QColor) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setZValue(Z_MASK)
        self.mask = mask
        h, w = mask.shape
        self._image = QImage(w, h, QImage.Format.Format_Indexed8)
        self.set_color(color)
        self.refresh()

    def set_color(self, color: QColor) -> None:
        self._image.setColorTable([qRgba(0, 0, 0, 0), qRgba(color.red(), color.green(), color.blue(), 255)])
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self._image.width(), self._image.height())

    def refresh(self, rect: Rect | None = None) -> None:
        """Copy ``rect`` (or everything) of the mask into the overlay and repaint it."""
        h, w = self.mask.shape
        x0, y0, x1, y1 = rect if rect is not None else (0, 0, w, h)
        bpl = self._image.bytesPerLine()
        pixels = np.ndarray((h, bpl), dtype=np.uint8, buffer=self._image.bits())
        pixels[y0:y1, x0:x1] = self.mask[y0:y1, x0:x1]
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        target = _exposed(option, self.boundingRect()).toAlignedRect()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(target, self._image, target)


# A perceptual blue-green-yellow-red colour map (anchors of "turbo"), as a 256-entry LUT.
_COLORMAP_ANCHORS = np.array([
    [48, 18, 59], [70, 107, 227], [40, 188, 235], [50, 241, 151],
    [164, 252, 60], [240, 204, 58], [250, 128, 37], [214, 54, 9], [122, 4, 3],
], dtype=np.float32)


def colormap_lut() -> np.ndarray:
    """(256, 3) uint8 colours for values 0..255."""
    positions = np.linspace(0, 255, len(_COLORMAP_ANCHORS))
    ramp = np.arange(256, dtype=np.float32)
    return np.stack([np.interp(ramp, positions, _COLORMAP_ANCHORS[:, c]) for c in range(3)],
                    axis=1).round().astype(np.uint8)


class HeatmapLayer(QGraphicsItem):
    """An anomaly map in a colour map, plus the outline where it crosses the threshold.

    The map may be smaller than the image (detectors work at a fixed resolution); it is
    stretched over the whole image.
    """

    def __init__(self, heat: np.ndarray, image_size: tuple[int, int], color: QColor) -> None:
        super().__init__()
        self.setZValue(Z_HEATMAP)
        heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
        self.heat = np.clip(heat, 0.0, 1.0)
        self._image_size = image_size
        rgb = colormap_lut()[(self.heat * 255).round().astype(np.uint8)]
        self._pixmap = QPixmap.fromImage(rgb_to_qimage(rgb))
        self._contour = QPainterPath()
        self._contour_color = color
        self.threshold = 1.0
        self.set_threshold(0.5)

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, *self._image_size)

    def set_threshold(self, threshold: float) -> None:
        import cv2

        self.threshold = float(threshold)
        binary = (self.heat >= self.threshold).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        sx = self._image_size[0] / self.heat.shape[1]
        sy = self._image_size[1] / self.heat.shape[0]
        path = QPainterPath()
        for contour in contours:
            points = contour[:, 0, :].astype(np.float64)
            if len(points) < 2:
                continue
            path.moveTo(QPointF(points[0, 0] * sx, points[0, 1] * sy))
            for x, y in points[1:]:
                path.lineTo(QPointF(x * sx, y * sy))
            path.closeSubpath()
        self._contour = path
        self.update()

    def value_at(self, x: float, y: float) -> float | None:
        """The heat value under image pixel (x, y)."""
        hx = int(x * self.heat.shape[1] / self._image_size[0])
        hy = int(y * self.heat.shape[0] / self._image_size[1])
        if 0 <= hy < self.heat.shape[0] and 0 <= hx < self.heat.shape[1]:
            return float(self.heat[hy, hx])
        return None

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawPixmap(self.boundingRect(), self._pixmap, QRectF(self._pixmap.rect()))
        if not self._contour.isEmpty():
            pen = QPen(self._contour_color, 2)
            pen.setCosmetic(True)
            painter.setOpacity(1.0)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(self._contour)


class CompareLayer(QGraphicsItem):
    """Before/after: the left of the split shows ``before``, the right ``after``."""

    def __init__(self, before: np.ndarray, after: np.ndarray, color: QColor) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setZValue(Z_COMPARE)
        self._before = QPixmap.fromImage(rgb_to_qimage(before))
        self._after = QPixmap.fromImage(rgb_to_qimage(after))
        self._color = color
        self.split = 0.5

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self._after.width(), self._after.height())

    def set_split(self, fraction: float) -> None:
        self.split = min(1.0, max(0.0, float(fraction)))
        self.update()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        bounds = self.boundingRect()
        x = bounds.width() * self.split
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, painter.worldTransform().m11() < 2.0)
        painter.drawPixmap(bounds, self._after, QRectF(self._after.rect()))
        left = QRectF(0, 0, x, bounds.height())
        scale_x = self._before.width() / bounds.width()
        painter.drawPixmap(left, self._before, QRectF(0, 0, x * scale_x, self._before.height()))
        pen = QPen(self._color, 2)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.drawLine(QPointF(x, 0), QPointF(x, bounds.height()))
