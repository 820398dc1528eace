"""Editable rectangles: move by dragging the inside, resize by the eight handles.

Boxes are integer pixel rects ``(x0, y0, x1, y1)`` with ``x1``/``y1`` exclusive, always
kept inside the image and at least ``MIN_SIDE`` pixels wide and high.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsSceneHoverEvent,
    QGraphicsSceneMouseEvent,
    QStyleOptionGraphicsItem,
    QWidget,
)

from app.canvas.layers import Z_BOXES

BoxTuple = tuple[int, int, int, int]
MIN_SIDE = 2
HANDLE_PX = 9  # handle size on screen, whatever the zoom

# Handle name -> which rect edges it moves (left, top, right, bottom).
HANDLES: dict[str, tuple[bool, bool, bool, bool]] = {
    "nw": (True, True, False, False), "n": (False, True, False, False),
    "ne": (False, True, True, False), "e": (False, False, True, False),
    "se": (False, False, True, True), "s": (False, False, False, True),
    "sw": (True, False, False, True), "w": (True, False, False, False),
}
_CURSORS = {
    "nw": Qt.CursorShape.SizeFDiagCursor, "se": Qt.CursorShape.SizeFDiagCursor,
    "ne": Qt.CursorShape.SizeBDiagCursor, "sw": Qt.CursorShape.SizeBDiagCursor,
    "n": Qt.CursorShape.SizeVerCursor, "s": Qt.CursorShape.SizeVerCursor,
    "e": Qt.CursorShape.SizeHorCursor, "w": Qt.CursorShape.SizeHorCursor,
}


def clamp_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> BoxTuple:
    """Round a rect to whole pixels, order its corners and keep it inside the image."""
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    left, top = int(round(max(0, min(left, width - MIN_SIDE)))), int(round(max(0, min(top, height - MIN_SIDE))))
    right = int(round(min(width, max(right, left + MIN_SIDE))))
    bottom = int(round(min(height, max(bottom, top + MIN_SIDE))))
    return (left, top, max(right, left + MIN_SIDE), max(bottom, top + MIN_SIDE))


class BoxItem(QGraphicsItem):
    """One box on the canvas; calls ``on_changed`` after each finished move or resize."""

    def __init__(self, box: BoxTuple, image_size: tuple[int, int], color: QColor,
                 on_changed: Callable[[BoxItem], None] | None = None, label: str = "") -> None:
        super().__init__()
        self.setZValue(Z_BOXES)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsFocusable)
        self.setAcceptHoverEvents(True)
        self._image_size = image_size
        self._color = color
        self._on_changed = on_changed
        self.label = label
        self._box = clamp_box(*box, *image_size)
        self._drag: tuple[str, QPointF, BoxTuple] | None = None
        self._handle_scene = 4.0  # handle size in scene units, updated on zoom

    # ----------------------------------------------------------------- geometry
    @property
    def box(self) -> BoxTuple:
        return self._box

    def set_box(self, box: tuple[float, float, float, float]) -> None:
        self.prepareGeometryChange()
        self._box = clamp_box(*box, *self._image_size)
        self.update()

    def rect(self) -> QRectF:
        x0, y0, x1, y1 = self._box
        return QRectF(x0, y0, x1 - x0, y1 - y0)

    def set_view_scale(self, scale: float) -> None:
        """Keep handles ``HANDLE_PX`` screen pixels big at the current zoom."""
        self.prepareGeometryChange()
        self._handle_scene = HANDLE_PX / max(scale, 1e-6)

    def boundingRect(self) -> QRectF:
        m = self._handle_scene
        return self.rect().adjusted(-m, -m, m, m)

    def _handle_rects(self) -> dict[str, QRectF]:
        r, s = self.rect(), self._handle_scene
        xs = {"w": r.left(), "c": r.center().x(), "e": r.right()}
        ys = {"n": r.top(), "c": r.center().y(), "s": r.bottom()}
        rects = {}
        for name in HANDLES:
            x = xs["w"] if "w" in name else xs["e"] if "e" in name else xs["c"]
            y = ys["n"] if "n" in name else ys["s"] if "s" in name else ys["c"]
            rects[name] = QRectF(x - s / 2, y - s / 2, s, s)
        return rects

    def handle_at(self, pos: QPointF) -> str | None:
        if not self.isSelected():
            return None
        for name, rect in self._handle_rects().items():
            if rect.adjusted(-1, -1, 1, 1).contains(pos):
                return name
        return None

    def shape(self):  # Qt override
        from PySide6.QtGui import QPainterPath

        path = QPainterPath()
        path.addRect(self.rect() if not self.isSelected() else self.boundingRect())
        return path

    # ----------------------------------------------------------------- painting
    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        selected = self.isSelected()
        pen = QPen(self._color, 3 if selected else 2)
        pen.setCosmetic(True)
        painter.setPen(pen)
        fill = QColor(self._color)
        fill.setAlpha(50 if selected else 18)
        painter.setBrush(QBrush(fill))
        painter.drawRect(self.rect())
        if selected:
            painter.setBrush(QBrush(QColor("white")))
            handle_pen = QPen(self._color, 1)
            handle_pen.setCosmetic(True)
            painter.setPen(handle_pen)
            for rect in self._handle_rects().values():
                painter.drawRect(rect)

    # ----------------------------------------------------------------- interaction
    def hoverMoveEvent(self, event: QGraphicsSceneHoverEvent) -> None:
        handle = self.handle_at(event.pos())
        self.setCursor(_CURSORS[handle] if handle else Qt.CursorShape.SizeAllCursor)
        super().hoverMoveEvent(event)

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            event.ignore()
            return
        handle = self.handle_at(event.pos())
        if not self.isSelected():
            if self.scene() is not None:
                self.scene().clearSelection()
            self.setSelected(True)
        self._drag = (handle or "move", event.scenePos(), self._box)
        event.accept()

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._drag is None:
            return
        mode, start, (x0, y0, x1, y1) = self._drag
        d = event.scenePos() - start
        w, h = self._image_size
        new: tuple[float, float, float, float]
        if mode == "move":
            dx = min(max(round(d.x()), -x0), w - x1)  # slide, never leave the image
            dy = min(max(round(d.y()), -y0), h - y1)
            new = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        else:
            left, top, right, bottom = HANDLES[mode]
            new = (x0 + d.x() if left else x0, y0 + d.y() if top else y0,
                   x1 + d.x() if right else x1, y1 + d.y() if bottom else y1)
        self.set_box(new)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._drag is None:
            return
        original = self._drag[2]
        self._drag = None
        if self._box != original and self._on_changed is not None:
            self._on_changed(self)
