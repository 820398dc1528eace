"""The image canvas driven with synthetic mouse and key events (offscreen Qt)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from app.canvas import ImageCanvas, Tool
from app.canvas.brush import fill_region, paint_segment
from app.canvas.history import MaskHistory


def _image(w: int = 200, h: int = 100) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def canvas(qtbot):
    view = ImageCanvas()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(_image())
    view.set_zoom(1.0)
    view.centerOn(100, 50)
    return view


def _viewport_pos(view: ImageCanvas, x: float, y: float) -> QPoint:
    return view.mapFromScene(QPointF(x, y))


def _mouse(view: ImageCanvas, kind, pos: QPoint, button=Qt.MouseButton.LeftButton, buttons=None) -> None:
    buttons = button if buttons is None else buttons
    event = QMouseEvent(kind, QPointF(pos), QPointF(view.viewport().mapToGlobal(pos)), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), event)


def drag(view: ImageCanvas, points: list[tuple[float, float]], button=Qt.MouseButton.LeftButton) -> None:
    """Press at the first image point, move through the rest, release at the last."""
    positions = [_viewport_pos(view, x, y) for x, y in points]
    _mouse(view, QMouseEvent.Type.MouseButtonPress, positions[0], button)
    for pos in positions[1:]:
        _mouse(view, QMouseEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton, button)
    _mouse(view, QMouseEvent.Type.MouseButtonRelease, positions[-1], button, Qt.MouseButton.NoButton)


def test_brush_stroke_paints_a_round_band_and_undo_redo_restore_it(canvas, qtbot):
    canvas.set_mask(None)
    canvas.set_tool(Tool.BRUSH)
    canvas.set_brush_radius(5)
    with qtbot.waitSignal(canvas.maskEdited) as edited:
        drag(canvas, [(40, 50), (80, 50), (120, 50)])
    mask = edited.args[0]
    assert mask[50, 40:121].all()          # the whole path is covered, no gaps
    assert mask[46:55, 80].all()           # radius 5 band
    assert not mask[40, 80] and not mask[60, 80]
    assert not mask[50, 20]
    painted = mask.copy()

    drag(canvas, [(100, 20), (100, 80)])  # second stroke
    assert canvas.mask()[20:81, 100].all()
    assert canvas.undo()
    np.testing.assert_array_equal(canvas.mask(), painted)
    assert canvas.undo()
    assert not canvas.mask().any()
    assert not canvas.undo()
    assert canvas.redo()
    np.testing.assert_array_equal(canvas.mask(), painted)
    count, percent = canvas.mask_area()
    assert count == int(painted.sum()) and percent == pytest.approx(100 * count / 20000)


def test_eraser_and_keyboard_undo(canvas, qtbot):
    canvas.set_mask(np.ones((100, 200), bool))
    canvas.set_tool(Tool.ERASER)
    canvas.set_brush_radius(3)
    drag(canvas, [(10, 10), (10, 90)])
    assert not canvas.mask()[10:91, 10].any()
    assert canvas.mask()[50, 30]
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert canvas.mask().all()
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert not canvas.mask()[50, 10]


def test_brush_size_keys_and_ctrl_wheel(canvas, qtbot):
    canvas.set_mask(None)
    canvas.set_tool(Tool.BRUSH)
    canvas.set_brush_radius(10)
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_BracketRight)
    assert canvas.brush_radius() > 10
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)
    assert canvas.brush_radius() < 10


def test_fill_closed_region_only(canvas):
    canvas.set_mask(None)
    ring = np.zeros((100, 200), bool)
    ring[20:60, 20:60] = True
    ring[25:55, 25:55] = False
    canvas.set_mask(ring)
    assert canvas.fill_at(40, 40)
    assert canvas.mask()[20:60, 20:60].all()
    assert not canvas.fill_at(150, 80)  # outside: reaches the border, nothing happens
    assert canvas.mask().sum() == 40 * 40
    canvas.clear_mask()
    assert not canvas.mask().any()
    canvas.undo()
    assert canvas.mask().sum() == 40 * 40


def test_draw_move_resize_delete_box(canvas, qtbot):
    canvas.set_boxes([])
    canvas.set_tool(Tool.BOX)
    with qtbot.waitSignal(canvas.boxesEdited) as drawn:
        drag(canvas, [(20, 20), (40, 30), (60, 50)])
    assert drawn.args[0] == [(20, 20, 60, 50)]
    with qtbot.waitSignal(canvas.boxesEdited) as moved:  # drag the inside: move, snapped inside the image
        drag(canvas, [(40, 35), (140, 85), (300, 95)])
    x0, y0, x1, y1 = moved.args[0][0]
    assert (x1 - x0, y1 - y0) == (40, 30) and x1 == 200 and y1 == 100
    with qtbot.waitSignal(canvas.boxesEdited) as resized:  # the selected box's top-left handle
        drag(canvas, [(x0, y0), (x0 - 20, y0 - 10)])
    assert resized.args[0] == [(x0 - 20, y0 - 10, 200, 100)]
    canvas.setFocus()
    with qtbot.waitSignal(canvas.boxesEdited) as deleted:
        qtbot.keyClick(canvas, Qt.Key.Key_Delete)
    assert deleted.args[0] == []


def test_zoom_wheel_keeps_point_under_cursor_and_fit(canvas):
    from PySide6.QtGui import QWheelEvent

    canvas.set_zoom(4.0)  # the image is larger than the view, so it can scroll
    canvas.centerOn(100, 50)
    pos = _viewport_pos(canvas, 90, 45)
    before = canvas.mapToScene(pos)
    event = QWheelEvent(QPointF(pos), QPointF(canvas.viewport().mapToGlobal(pos)), QPoint(0, 0), QPoint(0, 120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas.viewport(), event)
    assert canvas.zoom() == pytest.approx(5.0)
    after = canvas.mapToScene(pos)
    assert abs(after.x() - before.x()) < 1.5 and abs(after.y() - before.y()) < 1.5
    canvas.fit()
    assert canvas.zoom() == pytest.approx(min(400 / 200, 300 / 100), rel=0.1)


def test_history_memory_is_bounded():
    history = MaskHistory(max_bytes=4000)
    mask = np.zeros((400, 400), bool)
    for i in range(50):
        before = mask[0:100, 0:100].copy()
        mask[0:100, 0:100] = i % 2 == 0
        history.record((0, 0, 100, 100), before, mask[0:100, 0:100])
    assert history.nbytes <= 4000 and 1 <= len(history) < 50


def test_segment_and_fill_helpers():
    mask = np.zeros((50, 50), bool)
    rect = paint_segment(mask, (10, 10), (10, 10), 3, True)
    assert rect is not None and mask[10, 10] and mask.sum() == pytest.approx(np.pi * 9, rel=0.35)
    assert fill_region(np.zeros((10, 10), bool), 5, 5) is None


def test_heatmap_and_compare_overlays(canvas):
    heat = np.zeros((25, 50), np.float32)
    heat[5:10, 5:10] = 0.9
    canvas.set_heatmap(heat, opacity=0.6, threshold=0.5)
    canvas.set_heatmap_threshold(0.95)
    before, after = _image(), _image()[::-1].copy()
    canvas.set_compare(before, after, 0.3)
    assert canvas.compare_split() == pytest.approx(0.3)
    canvas.set_tool(Tool.PAN)
    drag(canvas, [(150, 50)])
    assert canvas.compare_split() == pytest.approx(0.75, abs=0.02)


@pytest.mark.timing
def test_painting_on_a_4000x3000_image_stays_fast(qtbot):
    import time

    view = ImageCanvas()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(np.full((3000, 4000, 3), 128, np.uint8))
    view.set_mask(None)
    view.set_tool(Tool.BRUSH)
    view.set_brush_radius(40)
    view.set_zoom(0.5)
    view.centerOn(2000, 1500)
    points = [(1500 + 10 * i, 1500 + 4 * i) for i in range(60)]
    positions = [_viewport_pos(view, x, y) for x, y in points]
    _mouse(view, QMouseEvent.Type.MouseButtonPress, positions[0])
    start = time.perf_counter()
    for pos in positions[1:]:
        _mouse(view, QMouseEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton)
        view.viewport().repaint()  # paint every step, as the screen would
    per_move_ms = (time.perf_counter() - start) * 1000 / (len(positions) - 1)
    _mouse(view, QMouseEvent.Type.MouseButtonRelease, positions[-1], Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton)
    mask = view.mask()
    assert all(mask[y, x] for x, y in points) and not mask[1400, 2000]
    print(f"4000x3000 brush: {per_move_ms:.1f} ms per mouse move (paint + repaint)")
    assert per_move_ms < 50, f"{per_move_ms:.1f} ms per mouse move"
    assert view.history().nbytes < 200_000  # the stroke is stored as a small packed patch


def test_box_edits_are_undone_and_redone_in_order_with_strokes(canvas, qtbot):
    canvas.set_mask(None)
    canvas.set_boxes([(5, 5, 25, 25)], labels=["hole"])
    canvas.set_tool(Tool.BOX)
    assert not canvas.can_undo()
    drag(canvas, [(40, 20), (60, 40), (80, 60)])  # draw a second box
    assert canvas.boxes() == [(5, 5, 25, 25), (40, 20, 80, 60)] and canvas.can_undo()
    canvas.undo()
    assert canvas.boxes() == [(5, 5, 25, 25)] and canvas.box_labels() == ["hole"]
    canvas.redo()
    assert canvas.boxes() == [(5, 5, 25, 25), (40, 20, 80, 60)]

    canvas.set_tool(Tool.BRUSH)  # a stroke after the box: one history, newest first
    canvas.set_brush_radius(3)
    drag(canvas, [(150, 50), (170, 50)])
    assert canvas.mask().any()
    canvas.undo()
    assert not canvas.mask().any() and len(canvas.boxes()) == 2
    canvas.undo()
    assert canvas.boxes() == [(5, 5, 25, 25)]


def test_a_deleted_box_comes_back_with_undo(canvas, qtbot):
    canvas.set_boxes([(5, 5, 25, 25), (40, 20, 80, 60)], labels=["hole", "stain"])
    canvas.set_tool(Tool.BOX)
    drag(canvas, [(50, 30), (50, 30)])  # a click inside selects it
    canvas.setFocus()
    with qtbot.waitSignal(canvas.boxesEdited) as deleted:
        qtbot.keyClick(canvas, Qt.Key.Key_Delete)
    assert deleted.args[0] == [(5, 5, 25, 25)]
    with qtbot.waitSignal(canvas.boxesEdited) as restored:
        canvas.undo()
    assert restored.args[0] == [(5, 5, 25, 25), (40, 20, 80, 60)] and canvas.box_labels() == ["hole", "stain"]


def test_replacing_boxes_is_one_undoable_edit_and_a_new_image_starts_a_new_history(canvas):
    canvas.set_boxes([(5, 5, 25, 25)])
    canvas.replace_boxes([(30, 30, 60, 60), (70, 10, 90, 40)], labels=["hole", "hole"])
    canvas.undo()
    assert canvas.boxes() == [(5, 5, 25, 25)]
    canvas.set_image(_image())
    assert not canvas.can_undo() and not canvas.can_redo()
