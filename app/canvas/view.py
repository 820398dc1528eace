"""The image canvas: zoom, pan, mask painting, boxes, heat map and compare overlays.

The canvas knows nothing about projects or files. Panels give it arrays
(:meth:`ImageCanvas.set_image`, :meth:`set_mask`, :meth:`set_boxes`, ...) and listen to
its signals (:attr:`maskEdited`, :attr:`boxesEdited`) to save edits through the workspace.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QPolygonF,
    QResizeEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QFrame, QGraphicsEllipseItem, QGraphicsPathItem, QGraphicsScene, QGraphicsView, QWidget

from app import theme
from app.canvas.boxes import MIN_SIDE, BoxItem, BoxTuple, clamp_box
from app.canvas.brush import fill_polygon, fill_region, paint_segment
from app.canvas.history import DEFAULT_MAX_BYTES, BoxEdit, Boxes, MaskHistory, Rect
from app.canvas.layers import Z_BOXES, Z_CURSOR, CompareLayer, HeatmapLayer, ImageLayer, MaskLayer, colormap_lut

MIN_ZOOM, MAX_ZOOM = 0.02, 32.0
WHEEL_ZOOM_STEP = 1.25
MAX_BRUSH_RADIUS = 500
OUTLINE_COLOR = QColor("#39ff14")  # the ground-truth outline: green shows on every colour-map hue


class Tool(enum.StrEnum):
    PAN = "pan"
    BRUSH = "brush"
    ERASER = "eraser"
    FILL = "fill"
    POLYGON = "polygon"  # click corners, double-click or Enter fills the outline
    BOX = "box"


_POLYGON_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Escape, Qt.Key.Key_Backspace)


def _union(a: Rect | None, b: Rect | None) -> Rect | None:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


class ImageCanvas(QGraphicsView):
    """A zoomable image with an optional editable mask, boxes, heat map or compare view."""

    maskEdited = Signal(object)          # the whole bool mask after a stroke/fill/clear/undo/redo
    maskAreaChanged = Signal(int, float)  # masked pixels, percent of the image
    boxesEdited = Signal(object)          # list[(x0, y0, x1, y1)] after a draw/move/resize/delete
    cursorMoved = Signal(int, int, str)   # image x, y and a pixel description; (-1, -1, "") outside
    zoomChanged = Signal(float)
    historyChanged = Signal(bool, bool)   # can undo, can redo
    brushRadiusChanged = Signal(int)
    toolChanged = Signal(str)
    compareChanged = Signal(float)
    message = Signal(str)                 # short notes for the status bar

    def __init__(self, parent: QWidget | None = None, *, history_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing, True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(False)  # panels handle file drops

        self._rgb: np.ndarray | None = None
        self._image_layer: ImageLayer | None = None
        self._mask_layer: MaskLayer | None = None
        self._heat_layer: HeatmapLayer | None = None
        self._compare_layer: CompareLayer | None = None
        self._boxes: list[BoxItem] = []
        self._boxes_recorded: Boxes = ()  # the boxes as of the last recorded edit (undo's reference)
        self._history = MaskHistory(history_bytes)
        self._tool = Tool.PAN
        self._brush_radius = 12
        self._mask_opacity = 0.5
        self._mask_visible = True
        self._mask_color: QColor | None = None  # None: the theme's "bad" colour
        self._brightness = 0  # view-only levels: -100..100 added, contrast in percent
        self._contrast = 100
        self._mask_editable = False
        self._boxes_editable = False
        self._fit_on_resize = True
        self._placeholder = ""  # drawn in the empty canvas: says why nothing is shown

        # Interaction state.
        self._stroke_before: np.ndarray | None = None
        self._stroke_rect: Rect | None = None
        self._stroke_last: QPointF | None = None
        self._stroke_value = True
        self._pan_last: QPoint | None = None
        self._space_held = False
        self._new_box: BoxItem | None = None
        self._new_box_origin: QPointF | None = None
        self._dragging_split = False
        self._polygon: list[QPointF] = []  # the corners clicked so far with the polygon tool
        self._polygon_hover: QPointF | None = None
        self._outline_item: QGraphicsPathItem | None = None  # ground truth over a heat map
        self._polygon_item = QGraphicsPathItem()
        self._polygon_item.setZValue(Z_CURSOR)
        self._polygon_item.setVisible(False)
        self.scene().addItem(self._polygon_item)

        self._cursor_item = QGraphicsEllipseItem()
        self._cursor_item.setZValue(Z_CURSOR)
        pen = QPen(QColor(255, 255, 255, 230), 1.5)
        pen.setCosmetic(True)
        self._cursor_item.setPen(pen)
        self._cursor_item.setVisible(False)
        self.scene().addItem(self._cursor_item)
        self._cursor_inner = QGraphicsEllipseItem(self._cursor_item)  # dark ring: visible on any image
        inner_pen = QPen(QColor(0, 0, 0, 200), 1)
        inner_pen.setCosmetic(True)
        self._cursor_inner.setPen(inner_pen)

        self._apply_theme()
        # A bound slot, not a lambda: Qt drops the connection when the canvas is deleted, where a
        # lambda would outlive it and raise on the next theme change (a second window, tests).
        theme.theme_changed().connect(self._theme_changed)

    # ================================================================== content
    def has_image(self) -> bool:
        return self._rgb is not None

    def image_size(self) -> tuple[int, int]:
        """(width, height) of the current image, (0, 0) without one."""
        if self._rgb is None:
            return (0, 0)
        return (self._rgb.shape[1], self._rgb.shape[0])

    def set_image(self, rgb: np.ndarray | None, *, keep_view: bool = False) -> None:
        """Show an RGB uint8 image; drops mask, boxes, heat map and compare overlays."""
        self.clear_mask_layer()
        self.clear_heatmap()
        self.clear_compare()
        self.set_outline(None)
        self.set_boxes([])
        if self._image_layer is not None:
            self.scene().removeItem(self._image_layer)
            self._image_layer = None
        self._rgb = None if rgb is None else np.asarray(rgb)
        if self._rgb is None:
            self.scene().setSceneRect(QRectF(0, 0, 1, 1))
            self.viewport().update()
            return
        if self._rgb.ndim == 2:
            self._rgb = np.repeat(self._rgb[:, :, None], 3, axis=2)
        self._image_layer = ImageLayer(self._rgb)
        self._image_layer.set_lut(self._levels_lut())
        self.scene().addItem(self._image_layer)
        w, h = self.image_size()
        self.scene().setSceneRect(QRectF(0, 0, w, h))
        if not keep_view:
            self.fit()

    def image(self) -> np.ndarray | None:
        return self._rgb

    def set_placeholder(self, text: str) -> None:
        """The line shown while there is no image (what to do next), centred in the view."""
        self._placeholder = text
        self.viewport().update()

    def placeholder(self) -> str:
        return self._placeholder

    def drawForeground(self, painter: QPainter, rect: QRectF | QRect) -> None:
        super().drawForeground(painter, rect)
        if self._heat_layer is not None and self._rgb is not None:
            self._draw_colorbar(painter)
        if self._rgb is not None or not self._placeholder:
            return
        # Drawn in viewport coordinates: the empty scene has no useful geometry to anchor to.
        painter.save()
        painter.resetTransform()
        painter.setPen(theme.colors().muted)
        area = self.viewport().rect().adjusted(24, 24, -24, -24)
        painter.drawText(area, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), self._placeholder)
        painter.restore()

    # ------------------------------------------------------------------ mask
    def set_mask(self, mask: np.ndarray | None, *, editable: bool = True) -> None:
        """Show ``mask`` (bool, the image's size; None = empty) and allow painting it."""
        if self._rgb is None:
            raise ValueError("set_image() before set_mask()")
        w, h = self.image_size()
        if mask is None:
            mask = np.zeros((h, w), dtype=bool)
        mask = np.array(mask, dtype=bool, copy=True)
        if mask.shape != (h, w):
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}")
        self.clear_mask_layer()
        self._mask_layer = MaskLayer(mask, self.mask_color())
        self._mask_layer.setOpacity(self._mask_opacity)
        self._mask_layer.setVisible(self._mask_visible)
        self.scene().addItem(self._mask_layer)
        self._mask_editable = editable
        self._history.clear()
        self._emit_history()
        self._emit_area()

    def clear_mask_layer(self) -> None:
        self._end_stroke(commit=False)
        self.cancel_polygon()
        if self._mask_layer is not None:
            self.scene().removeItem(self._mask_layer)
            self._mask_layer = None
        self._mask_editable = False
        self._history.clear()
        self._emit_history()
        self.maskAreaChanged.emit(0, 0.0)

    # Shadows QWidget.mask() (a QRegion) on purpose: Qt never calls it from Python, and the
    # canvas has no widget mask; renaming would touch every panel and test.
    def mask(self) -> np.ndarray | None:  # type: ignore[override]
        """A copy of the current mask (bool HxW), or None without a mask layer."""
        return None if self._mask_layer is None else self._mask_layer.mask.copy()

    def mask_area(self) -> tuple[int, float]:
        if self._mask_layer is None:
            return (0, 0.0)
        count = int(np.count_nonzero(self._mask_layer.mask))
        return count, 100.0 * count / max(1, self._mask_layer.mask.size)

    def set_mask_opacity(self, opacity: float) -> None:
        self._mask_opacity = min(1.0, max(0.0, float(opacity)))
        if self._mask_layer is not None:
            self._mask_layer.setOpacity(self._mask_opacity)

    def mask_opacity(self) -> float:
        return self._mask_opacity

    def set_mask_visible(self, visible: bool) -> None:
        """Show or hide the mask overlay (to look at the defect under it); the mask is kept."""
        self._mask_visible = bool(visible)
        if self._mask_layer is not None:
            self._mask_layer.setVisible(self._mask_visible)

    def mask_visible(self) -> bool:
        return self._mask_visible

    def set_mask_color(self, color: QColor | None) -> None:
        """The overlay's tint; None follows the theme. Red is invisible on red parts."""
        self._mask_color = None if color is None else QColor(color)
        if self._mask_layer is not None:
            self._mask_layer.set_color(self.mask_color())
        self._update_polygon_item()

    def mask_color(self) -> QColor:
        return QColor(self._mask_color) if self._mask_color is not None else theme.colors().bad

    # ------------------------------------------------------------------ viewing levels
    def set_display_levels(self, brightness: int = 0, contrast: int = 100) -> None:
        """Brightness (-100..100) and contrast (percent) of what is shown: the image array,
        what is saved and what the models read never change."""
        self._brightness = int(min(100, max(-100, brightness)))
        self._contrast = int(min(400, max(10, contrast)))
        if self._image_layer is not None:
            self._image_layer.set_lut(self._levels_lut())

    def display_levels(self) -> tuple[int, int]:
        return (self._brightness, self._contrast)

    def _levels_lut(self) -> np.ndarray | None:
        if self._brightness == 0 and self._contrast == 100:
            return None
        ramp = np.arange(256, dtype=np.float32)
        values = (ramp - 127.5) * (self._contrast / 100.0) + 127.5 + self._brightness * 2.55
        return np.clip(np.round(values), 0, 255).astype(np.uint8)

    def clear_mask(self) -> None:
        """Erase the whole mask (one undoable step)."""
        if self._mask_layer is None or not self._mask_editable:
            return
        mask = self._mask_layer.mask
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return
        rect = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        x0, y0, x1, y1 = rect
        before = mask[y0:y1, x0:x1].copy()
        mask[y0:y1, x0:x1] = False
        self._commit_edit(rect, before)

    def fill_at(self, x: int, y: int) -> bool:
        """Fill the closed region around image pixel (x, y); False when it is not closed."""
        if self._mask_layer is None or not self._mask_editable:
            return False
        mask = self._mask_layer.mask
        before = mask.copy()
        rect = fill_region(mask, int(x), int(y))
        if rect is None:
            self.message.emit("Fill: click inside a closed outline (the region reaches the image border)")
            return False
        x0, y0, x1, y1 = rect
        self._commit_edit(rect, before[y0:y1, x0:x1])
        return True

    # ------------------------------------------------------------------ polygon
    def polygon_points(self) -> list[tuple[float, float]]:
        """The corners of the polygon being drawn (image coordinates)."""
        return [(p.x(), p.y()) for p in self._polygon]

    def add_polygon_point(self, x: float, y: float) -> None:
        """Add a corner to the polygon being drawn (clamped to the image)."""
        w, h = self.image_size()
        point = QPointF(min(max(0.0, x), w), min(max(0.0, y), h))
        if self._polygon and (self._polygon[-1] - point).manhattanLength() < 1e-6:
            return  # the second click of a double-click lands on the same corner
        self._polygon.append(point)
        self._update_polygon_item()

    def close_polygon(self, erase: bool = False) -> bool:
        """Fill (or with ``erase`` clear) the drawn polygon as one undoable edit."""
        points, self._polygon = self.polygon_points(), []
        self._update_polygon_item()
        if self._mask_layer is None or not self._mask_editable:
            return False
        if len(points) < 3:
            if points:
                self.message.emit("Polygon: click at least 3 corners, then double-click or press Enter")
            return False
        mask = self._mask_layer.mask
        before = mask.copy()
        rect = fill_polygon(mask, points, not erase)
        if rect is None:
            return False
        x0, y0, x1, y1 = rect
        self._commit_edit(rect, before[y0:y1, x0:x1])
        return True

    def cancel_polygon(self) -> None:
        self._polygon = []
        self._update_polygon_item()

    def _update_polygon_item(self) -> None:
        points = list(self._polygon)
        if points and self._polygon_hover is not None:
            points.append(self._polygon_hover)
        path = QPainterPath()
        if points:
            path.addPolygon(QPolygonF(points))
            if len(points) > 2:
                path.closeSubpath()
        self._polygon_item.setPath(path)
        color = QColor(self._mask_color) if self._mask_color is not None else theme.colors().bad
        pen = QPen(color, 2, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        self._polygon_item.setPen(pen)
        fill = QColor(color)
        fill.setAlpha(60)
        self._polygon_item.setBrush(fill)
        self._polygon_item.setVisible(bool(self._polygon))

    # ------------------------------------------------------------------ undo / redo
    def can_undo(self) -> bool:
        return self._history.can_undo

    def can_redo(self) -> bool:
        return self._history.can_redo

    def history(self) -> MaskHistory:
        return self._history

    def undo(self) -> bool:
        if self._stroke_before is not None or self._new_box is not None:
            return False
        step = self._history.undo(None if self._mask_layer is None else self._mask_layer.mask)
        return self._after_history_step(step, undone=True)

    def redo(self) -> bool:
        if self._stroke_before is not None or self._new_box is not None:
            return False
        step = self._history.redo(None if self._mask_layer is None else self._mask_layer.mask)
        return self._after_history_step(step, undone=False)

    def _after_history_step(self, step: Rect | BoxEdit | None, undone: bool) -> bool:
        if step is None:
            return False
        if isinstance(step, BoxEdit):
            self._show_box_state(step.before if undone else step.after)
            self._emit_history()
            self.boxesEdited.emit(self.boxes())
            return True
        rect = step
        assert self._mask_layer is not None
        self._mask_layer.refresh(rect)
        self._emit_history()
        self._emit_area()
        self.maskEdited.emit(self._mask_layer.mask.copy())
        return True

    def _commit_edit(self, rect: Rect, before: np.ndarray) -> None:
        assert self._mask_layer is not None
        x0, y0, x1, y1 = rect
        after = self._mask_layer.mask[y0:y1, x0:x1]
        self._mask_layer.refresh(rect)
        if self._history.record(rect, before, after):
            self._emit_history()
            self._emit_area()
            self.maskEdited.emit(self._mask_layer.mask.copy())

    def _emit_history(self) -> None:
        self.historyChanged.emit(self._history.can_undo, self._history.can_redo)

    def _emit_area(self) -> None:
        self.maskAreaChanged.emit(*self.mask_area())

    # ------------------------------------------------------------------ boxes
    def set_boxes(self, boxes: Sequence[Sequence[int]], *, editable: bool = True,
                  labels: Sequence[str] | None = None) -> None:
        """Show boxes ``(x0, y0, x1, y1)``; editable ones can be moved, resized, deleted."""
        for item in self._boxes:
            self.scene().removeItem(item)
        self._boxes = []
        self._boxes_editable = editable
        self._boxes_recorded = ()
        if self._rgb is None:
            return
        for i, box in enumerate(boxes):
            label = labels[i] if labels is not None and i < len(labels) else ""
            self._add_box_item(tuple(int(v) for v in box), label)  # type: ignore[arg-type]
        self._update_box_interaction()
        self._boxes_recorded = self._box_state()

    def replace_boxes(self, boxes: Sequence[Sequence[int]], labels: Sequence[str] | None = None) -> None:
        """Replace the shown boxes as one undoable edit (e.g. a box proposal), and emit
        :attr:`boxesEdited` as a user edit does."""
        before = self._box_state()
        self.set_boxes(boxes, editable=self._boxes_editable, labels=labels)
        self._boxes_recorded = before
        self._boxes_user_edited()

    def _box_state(self) -> Boxes:
        return tuple((item.box, item.label) for item in self._boxes if item is not self._new_box)

    def _show_box_state(self, state: Boxes) -> None:
        self.set_boxes([box for box, _ in state], editable=self._boxes_editable, labels=[label for _, label in state])

    def _boxes_user_edited(self) -> None:
        """Record the change since the last recorded box state and tell listeners."""
        after = self._box_state()
        if self._history.record_boxes(self._boxes_recorded, after):
            self._emit_history()
        self._boxes_recorded = after
        self.boxesEdited.emit(self.boxes())

    def boxes(self) -> list[BoxTuple]:
        return [item.box for item in self._boxes if item is not self._new_box]

    def box_labels(self) -> list[str]:
        """The label of each box of :meth:`boxes`, in the same order."""
        return [item.label for item in self._boxes if item is not self._new_box]

    def selected_boxes(self) -> list[int]:
        return [i for i, item in enumerate(self._boxes) if item.isSelected()]

    def delete_selected_boxes(self) -> int:
        doomed = [item for item in self._boxes if item.isSelected()]
        for item in doomed:
            self.scene().removeItem(item)
            self._boxes.remove(item)
        if doomed:
            self._boxes_user_edited()
        return len(doomed)

    def _add_box_item(self, box: BoxTuple, label: str = "") -> BoxItem:
        item = BoxItem(box, self.image_size(), theme.colors().accent, self._box_changed, label)
        item.set_view_scale(self.zoom())
        self.scene().addItem(item)
        self._boxes.append(item)
        return item

    def _box_changed(self, _item: BoxItem) -> None:
        self._boxes_user_edited()

    def _update_box_interaction(self) -> None:
        active = self._boxes_editable and self._tool == Tool.BOX
        for item in self._boxes:
            item.setAcceptedMouseButtons(Qt.MouseButton.LeftButton if active else Qt.MouseButton.NoButton)
            item.setAcceptHoverEvents(active)
            if not active:
                item.setSelected(False)

    # ------------------------------------------------------------------ heat map
    def set_heatmap(self, heat: np.ndarray | None, *, opacity: float = 0.5, threshold: float = 0.5) -> None:
        """Show an anomaly map (float, 0..1, any size) over the image."""
        self.clear_heatmap()
        if heat is None or self._rgb is None:
            return
        self._heat_layer = HeatmapLayer(heat, self.image_size(), QColor("white"))
        self._heat_layer.setOpacity(opacity)
        self._heat_layer.set_threshold(threshold)
        self.scene().addItem(self._heat_layer)
        # The colour bar is fixed to the viewport: scrolling by blitting would smear it.
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)

    def set_heatmap_opacity(self, opacity: float) -> None:
        if self._heat_layer is not None:
            self._heat_layer.setOpacity(min(1.0, max(0.0, opacity)))

    def set_heatmap_threshold(self, threshold: float) -> None:
        if self._heat_layer is not None:
            self._heat_layer.set_threshold(threshold)
            self.viewport().update()  # the colour bar marks the threshold

    def clear_heatmap(self) -> None:
        if self._heat_layer is not None:
            self.scene().removeItem(self._heat_layer)
            self._heat_layer = None
            self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
            self.viewport().update()  # the colour bar goes with it

    def has_heatmap(self) -> bool:
        return self._heat_layer is not None

    def heatmap_threshold(self) -> float | None:
        return None if self._heat_layer is None else self._heat_layer.threshold

    # ------------------------------------------------------------------ ground-truth outline
    def set_outline(self, mask: np.ndarray | None) -> None:
        """Outline the true defect pixels (bool, any size: stretched over the image) in green,
        to compare with the heat map; None removes it."""
        import cv2

        if self._outline_item is not None:
            self.scene().removeItem(self._outline_item)
            self._outline_item = None
        if mask is None or self._rgb is None or not np.any(mask):
            return
        mask = np.asarray(mask, dtype=np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        w, h = self.image_size()
        sx, sy = w / mask.shape[1], h / mask.shape[0]
        path = QPainterPath()
        for contour in contours:
            # Contour points are pixel indices; +0.5 puts the line on the pixels' centres.
            points = [QPointF((x + 0.5) * sx, (y + 0.5) * sy) for x, y in contour[:, 0, :]]
            if len(points) >= 2:
                path.addPolygon(QPolygonF(points))
                path.closeSubpath()
        item = QGraphicsPathItem(path)
        pen = QPen(OUTLINE_COLOR, 2, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        item.setPen(pen)
        item.setZValue(Z_BOXES - 1)
        self.scene().addItem(item)
        self._outline_item = item
        self.viewport().update()

    def has_outline(self) -> bool:
        return self._outline_item is not None

    def outline_bounds(self) -> QRectF | None:
        """The outline's bounding rect in image coordinates."""
        return None if self._outline_item is None else self._outline_item.path().boundingRect()

    def colorbar_rect(self) -> QRectF:
        """Where the heat map's colour bar is drawn, in viewport coordinates."""
        area = self.viewport().rect()
        height = max(80.0, min(260.0, area.height() * 0.5))
        return QRectF(area.width() - 34.0, 14.0 + 16.0, 14.0, height)

    def _draw_colorbar(self, painter: QPainter) -> None:
        """A vertical score scale (0 normal .. 1 anomalous) with the threshold marked, so a
        colour on the image reads as a number; and a key for the ground-truth outline."""
        assert self._heat_layer is not None
        bar = self.colorbar_rect()
        lut = colormap_lut()
        painter.save()
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        backdrop = bar.adjusted(-64, -22, 8, 22 + (18 if self._outline_item is not None else 0))
        painter.fillRect(backdrop, QColor(0, 0, 0, 150))
        rows = int(bar.height())
        for row in range(rows):
            value = 1.0 - row / max(1, rows - 1)  # top is 1 (anomalous)
            r, g, b = (int(v) for v in lut[int(round(value * 255))])
            painter.fillRect(QRectF(bar.x(), bar.y() + row, bar.width(), 1), QColor(r, g, b))
        painter.setPen(QColor("white"))
        painter.drawRect(bar)
        metrics = painter.fontMetrics()
        right = bar.x() - 4

        def label(y: float, text: str) -> None:
            width = metrics.horizontalAdvance(text)
            painter.drawText(QPointF(right - width, y + metrics.ascent() / 2 - 1), text)

        painter.drawText(QPointF(bar.x() - 58, bar.y() - 8), "anomaly score")
        label(bar.y(), "1.0")
        label(bar.bottom(), "0.0")
        threshold = self._heat_layer.threshold
        y = bar.bottom() - threshold * bar.height()
        painter.drawLine(QPointF(bar.x() - 3, y), QPointF(bar.right() + 3, y))
        label(y, f"{threshold:.2f} ⟶")
        if self._outline_item is not None:
            y_key = bar.bottom() + 24
            pen = QPen(OUTLINE_COLOR, 2, Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawLine(QPointF(bar.x() - 58, y_key), QPointF(bar.x() - 38, y_key))
            painter.setPen(QColor("white"))
            painter.drawText(QPointF(bar.x() - 34, y_key + metrics.ascent() / 2 - 1), "true defect")
        painter.restore()

    # ------------------------------------------------------------------ compare
    def set_compare(self, before: np.ndarray, after: np.ndarray, split: float = 0.5) -> None:
        """Show ``after`` with ``before`` left of a draggable vertical split."""
        if self._rgb is None or before.shape[:2] != after.shape[:2]:
            self.set_image(after)
        self.clear_compare()
        self._compare_layer = CompareLayer(before, after, theme.colors().accent)
        self._compare_layer.set_split(split)
        self.scene().addItem(self._compare_layer)
        self.compareChanged.emit(self._compare_layer.split)

    def set_compare_split(self, fraction: float) -> None:
        if self._compare_layer is not None:
            self._compare_layer.set_split(fraction)
            self.compareChanged.emit(self._compare_layer.split)

    def compare_split(self) -> float | None:
        return None if self._compare_layer is None else self._compare_layer.split

    def clear_compare(self) -> None:
        if self._compare_layer is not None:
            self.scene().removeItem(self._compare_layer)
            self._compare_layer = None
        self._dragging_split = False

    # ================================================================== view
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom to ``zoom`` (1 = one image pixel per screen pixel) keeping ``anchor`` still."""
        zoom = min(MAX_ZOOM, max(MIN_ZOOM, float(zoom)))
        self._fit_on_resize = False
        old_anchor = self.transformationAnchor()
        if anchor is None:
            self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setTransform(QTransform.fromScale(zoom, zoom))
        self.setTransformationAnchor(old_anchor)
        self._zoom_updated()

    def zoom_around(self, zoom: float, viewport_pos: QPoint) -> None:
        """Zoom keeping the image point under ``viewport_pos`` where it is (wheel zoom)."""
        zoom = min(MAX_ZOOM, max(MIN_ZOOM, float(zoom)))
        self._fit_on_resize = False
        before = self.mapToScene(viewport_pos)
        old_anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setTransform(QTransform.fromScale(zoom, zoom))
        self.setTransformationAnchor(old_anchor)
        after = self.mapToScene(viewport_pos)
        # Scroll so the point that was under the cursor is under it again.
        hbar, vbar = self.horizontalScrollBar(), self.verticalScrollBar()
        hbar.setValue(hbar.value() + round((before.x() - after.x()) * zoom))
        vbar.setValue(vbar.value() + round((before.y() - after.y()) * zoom))
        self._zoom_updated()

    def zoom_by(self, factor: float) -> None:
        self.set_zoom(self.zoom() * factor)

    def fit(self) -> None:
        """Show the whole image."""
        if self._rgb is None:
            return
        self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self._fit_on_resize = True
        self._zoom_updated()

    def actual_size(self) -> None:
        """One image pixel per screen pixel, around the view centre."""
        self.set_zoom(1.0)

    def view_state(self) -> dict:
        """Zoom and centre (image coordinates), to restore the view on reopen."""
        centre = self.mapToScene(self.viewport().rect().center())
        return {"zoom": round(self.zoom(), 4), "center": [round(centre.x(), 1), round(centre.y(), 1)],
                "fit": self._fit_on_resize}

    def restore_view_state(self, state: dict) -> None:
        try:
            if state.get("fit", True):
                self.fit()
                return
            self.set_zoom(float(state["zoom"]))
            cx, cy = state["center"]
            self.centerOn(QPointF(float(cx), float(cy)))
        except (KeyError, TypeError, ValueError):
            self.fit()

    def _zoom_updated(self) -> None:
        z = self.zoom()
        for item in self._boxes:
            item.set_view_scale(z)
        self.zoomChanged.emit(z)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fit_on_resize:
            self.fit()

    # ================================================================== tools
    def tool(self) -> Tool:
        return self._tool

    def set_tool(self, tool: Tool | str) -> None:
        tool = Tool(tool)
        self._end_stroke(commit=True)
        if tool != self._tool:
            self.cancel_polygon()
        self._tool = tool
        self._update_box_interaction()
        self._update_cursor()
        self.toolChanged.emit(tool.value)

    def brush_radius(self) -> int:
        return self._brush_radius

    def set_brush_radius(self, radius: int) -> None:
        radius = int(min(MAX_BRUSH_RADIUS, max(1, radius)))
        if radius != self._brush_radius:
            self._brush_radius = radius
            self.brushRadiusChanged.emit(radius)
        self._update_cursor_outline()

    def grow_brush(self) -> None:
        self.set_brush_radius(max(self._brush_radius + 1, round(self._brush_radius * 1.25)))

    def shrink_brush(self) -> None:
        self.set_brush_radius(min(self._brush_radius - 1, round(self._brush_radius / 1.25)))

    def _painting_tool(self) -> bool:
        return self._tool in (Tool.BRUSH, Tool.ERASER) and self._mask_editable and self._mask_layer is not None

    def _update_cursor(self) -> None:
        if self._space_held or self._pan_last is not None:
            cursor = Qt.CursorShape.ClosedHandCursor if self._pan_last is not None else Qt.CursorShape.OpenHandCursor
        elif self._painting_tool():
            cursor = Qt.CursorShape.BlankCursor
        elif self._tool in (Tool.FILL, Tool.BOX, Tool.POLYGON):
            cursor = Qt.CursorShape.CrossCursor
        elif self._compare_layer is not None:
            cursor = Qt.CursorShape.SplitHCursor
        else:
            cursor = Qt.CursorShape.OpenHandCursor
        self.viewport().setCursor(cursor)
        self._update_cursor_outline()

    def _update_cursor_outline(self, scene_pos: QPointF | None = None) -> None:
        visible = self._painting_tool() and not self._space_held and self.underMouse()
        if scene_pos is None:
            scene_pos = self.mapToScene(self.viewport().mapFromGlobal(self.cursor().pos()))
        r = float(self._brush_radius)
        rect = QRectF(scene_pos.x() - r, scene_pos.y() - r, 2 * r, 2 * r)
        self._cursor_item.setRect(rect)
        inset = 1.0 / max(self.zoom(), 1e-6)
        self._cursor_inner.setRect(rect.adjusted(inset, inset, -inset, -inset))
        self._cursor_item.setVisible(visible)

    def _theme_changed(self, _dark: bool) -> None:
        self._apply_theme()

    def _apply_theme(self) -> None:
        self.setBackgroundBrush(theme.colors().canvas_background)
        if self._mask_layer is not None:
            self._mask_layer.set_color(self.mask_color())

    # ================================================================== events
    def _image_point(self, event_pos: QPoint | QPointF) -> QPointF:
        return self.mapToScene(QPoint(int(event_pos.x()), int(event_pos.y())))

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y()
        if delta == 0:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier and self._tool in (Tool.BRUSH, Tool.ERASER):
            self.grow_brush() if delta > 0 else self.shrink_brush()
            event.accept()
            return
        factor = WHEEL_ZOOM_STEP ** (delta / 120.0)
        self.zoom_around(self.zoom() * factor, event.position().toPoint())
        self._update_cursor_outline(self._image_point(event.position()))
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        pos = self._image_point(event.position())
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and (
                self._space_held or (self._tool == Tool.PAN and self._compare_layer is None))):
            self._pan_last = event.position().toPoint()
            self._update_cursor()
            event.accept()
            return
        if self._rgb is None:
            return super().mousePressEvent(event)
        if self._compare_layer is not None and button == Qt.MouseButton.LeftButton and self._tool == Tool.PAN:
            self._dragging_split = True
            self.set_compare_split(pos.x() / max(1, self.image_size()[0]))
            event.accept()
            return
        if self._painting_tool() and button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            # Right button paints the opposite of the tool: erase with the brush, paint with the eraser.
            erase = (self._tool == Tool.ERASER) != (button == Qt.MouseButton.RightButton)
            self._begin_stroke(pos, not erase)
            event.accept()
            return
        if self._tool == Tool.POLYGON and button == Qt.MouseButton.LeftButton and self._mask_editable:
            self.add_polygon_point(pos.x(), pos.y())
            event.accept()
            return
        if self._tool == Tool.FILL and button == Qt.MouseButton.LeftButton and self._mask_editable:
            self.fill_at(int(np.floor(pos.x())), int(np.floor(pos.y())))
            event.accept()
            return
        if self._tool == Tool.BOX and self._boxes_editable and button == Qt.MouseButton.LeftButton:
            item = self.itemAt(event.position().toPoint())
            if isinstance(item, BoxItem):
                return super().mousePressEvent(event)
            self.scene().clearSelection()
            w, h = self.image_size()
            x = min(max(0.0, pos.x()), w)
            y = min(max(0.0, pos.y()), h)
            self._new_box_origin = QPointF(round(x), round(y))
            self._new_box = self._add_box_item(clamp_box(x, y, x + MIN_SIDE, y + MIN_SIDE, w, h))
            self._new_box.setSelected(True)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = self._image_point(event.position())
        self._report_cursor(pos)
        if self._pan_last is not None:
            delta = event.position().toPoint() - self._pan_last
            self._pan_last = event.position().toPoint()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())
            event.accept()
            return
        if self._dragging_split:
            self.set_compare_split(pos.x() / max(1, self.image_size()[0]))
            return
        if self._stroke_before is not None:
            self._continue_stroke(pos)
            self._update_cursor_outline(pos)
            event.accept()
            return
        if self._polygon:
            self._polygon_hover = pos
            self._update_polygon_item()
        if self._new_box is not None and self._new_box_origin is not None:
            w, h = self.image_size()
            o = self._new_box_origin
            self._new_box.set_box(clamp_box(o.x(), o.y(), min(max(0.0, pos.x()), w), min(max(0.0, pos.y()), h), w, h))
            return
        self._update_cursor_outline(pos)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_last is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._pan_last = None
            self._update_cursor()
            return
        if self._dragging_split:
            self._dragging_split = False
            return
        if self._stroke_before is not None:
            self._end_stroke(commit=True)
            return
        if self._new_box is not None:
            item, self._new_box, self._new_box_origin = self._new_box, None, None
            x0, y0, x1, y1 = item.box
            if x1 - x0 < 2 * MIN_SIDE or y1 - y0 < 2 * MIN_SIDE:  # a click, not a drag
                self.scene().removeItem(item)
                self._boxes.remove(item)
            else:
                self._update_box_interaction()
                self._boxes_user_edited()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._tool == Tool.POLYGON and event.button() == Qt.MouseButton.LeftButton and self._mask_editable:
            # The double-click's first click already placed this corner: close the outline.
            pos = self._image_point(event.position())
            self.add_polygon_point(pos.x(), pos.y())
            self.close_polygon(erase=bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier))
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def event(self, event: QEvent) -> bool:
        # While a polygon is drawn, Enter, Esc and Backspace act on it, not on the window's
        # shortcuts (Backspace there deletes boxes).
        if (event.type() == QEvent.Type.ShortcutOverride and self._polygon and isinstance(event, QKeyEvent)
                and event.key() in _POLYGON_KEYS):
            event.accept()
            return True
        return super().event(event)

    def leaveEvent(self, event) -> None:  # Qt override
        self._cursor_item.setVisible(False)
        self.cursorMoved.emit(-1, -1, "")
        super().leaveEvent(event)

    def enterEvent(self, event) -> None:  # Qt override
        self._update_cursor()
        super().enterEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = True
            self._cursor_item.setVisible(False)
            self._update_cursor()
            return
        if self._polygon and key in _POLYGON_KEYS:
            if key == Qt.Key.Key_Escape:
                self.cancel_polygon()
            elif key == Qt.Key.Key_Backspace:
                self._polygon.pop()
                self._update_polygon_item()
            else:
                self.close_polygon(erase=bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier))
            return
        if key == Qt.Key.Key_BracketRight:
            self.grow_brush()
        elif key == Qt.Key.Key_BracketLeft:
            self.shrink_brush()
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self._tool == Tool.BOX:
            self.delete_selected_boxes()
        elif key == Qt.Key.Key_Z and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.redo() if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else self.undo()
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = False
            self._pan_last = None
            self._update_cursor()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:  # Qt override
        self._space_held = False
        self._end_stroke(commit=True)
        super().focusOutEvent(event)

    # ------------------------------------------------------------------ strokes
    def _begin_stroke(self, pos: QPointF, value: bool) -> None:
        assert self._mask_layer is not None
        self._stroke_before = self._mask_layer.mask.copy()
        self._stroke_value = value
        self._stroke_rect = None
        self._stroke_last = pos
        self._stamp(pos, pos)

    def _continue_stroke(self, pos: QPointF) -> None:
        if self._stroke_last is None:
            return
        self._stamp(self._stroke_last, pos)
        self._stroke_last = pos

    def _stamp(self, a: QPointF, b: QPointF) -> None:
        assert self._mask_layer is not None
        rect = paint_segment(self._mask_layer.mask, (a.x(), a.y()), (b.x(), b.y()),
                             self._brush_radius, self._stroke_value)
        if rect is not None:
            self._mask_layer.refresh(rect)
            self._stroke_rect = _union(self._stroke_rect, rect)

    def _end_stroke(self, commit: bool) -> None:
        before, rect = self._stroke_before, self._stroke_rect
        self._stroke_before = self._stroke_rect = self._stroke_last = None
        if before is None or self._mask_layer is None:
            return
        if rect is None:
            return
        x0, y0, x1, y1 = rect
        if not commit:  # put the pixels back
            self._mask_layer.mask[y0:y1, x0:x1] = before[y0:y1, x0:x1]
            self._mask_layer.refresh(rect)
            return
        self._commit_edit(rect, before[y0:y1, x0:x1])

    def is_stroking(self) -> bool:
        return self._stroke_before is not None

    # ------------------------------------------------------------------ status
    def _report_cursor(self, pos: QPointF) -> None:
        if self._rgb is None:
            return
        x, y = int(np.floor(pos.x())), int(np.floor(pos.y()))
        w, h = self.image_size()
        if not (0 <= x < w and 0 <= y < h):
            self.cursorMoved.emit(-1, -1, "")
            return
        r, g, b = (int(v) for v in self._rgb[y, x, :3])
        text = f"RGB {r} {g} {b}"
        if self._mask_layer is not None:
            text += "  mask " + ("1" if self._mask_layer.mask[y, x] else "0")
        if self._heat_layer is not None:
            value = self._heat_layer.value_at(x, y)
            if value is not None:
                text += f"  score {value:.3f}"
        self.cursorMoved.emit(x, y, text)
