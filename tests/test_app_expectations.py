"""What engineers expect from an annotation and inspection tool (issue 12, second part),
each driven as a user would: mouse and keys on the real widgets."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402
from _app_helpers import send_mouse, window_factory, write_project  # noqa: E402
from anogen.data.imageio import read_image, read_mask  # noqa: E402
from anogen.data.workspace import Workspace  # noqa: E402
from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from app.canvas import Tool  # noqa: E402
from app.studio import Selection  # noqa: E402


@pytest.fixture
def project(tmp_path) -> Path:
    return write_project(tmp_path)


@pytest.fixture
def make_window(qtbot, tmp_path):
    make, windows = window_factory(qtbot, tmp_path)
    yield make
    for window in windows:
        window.engine.shutdown()


def click(canvas, x: float, y: float, double: bool = False) -> None:
    """A left click (or the press/release/double-click/release of a double-click) at image (x, y)."""
    pos = canvas.mapFromScene(QPointF(x, y))
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    send_mouse(canvas, QMouseEvent.Type.MouseButtonPress, pos, left, left)
    send_mouse(canvas, QMouseEvent.Type.MouseButtonRelease, pos, left, none)
    if double:
        send_mouse(canvas, QMouseEvent.Type.MouseButtonDblClick, pos, left, left)
        send_mouse(canvas, QMouseEvent.Type.MouseButtonRelease, pos, left, none)


def saved_mask(project: Path, kind: str = "scratch", index: int = 0) -> np.ndarray | None:
    support = Workspace.open(project).project.defect_kind(kind).support[index]
    return None if support.mask is None else read_mask(project / support.mask)


# ---------------------------------------------------------------- annotation tools
def test_polygon_tool_fills_the_clicked_outline_and_undoes_in_one_step(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 0))
    canvas = window.canvas
    window.tool_actions[Tool.POLYGON].trigger()  # the Tools menu entry (key P)
    assert canvas.tool() == Tool.POLYGON

    for x, y in ((20, 20), (60, 20), (60, 50)):
        click(canvas, x, y)
    click(canvas, 20, 50, double=True)  # double-click closes and fills
    mask = canvas.mask()
    assert mask[25:45, 25:55].all()  # inside the outline
    assert not mask[:15].any() and not mask[:, 65:].any()  # nothing outside it
    assert 30 * 40 * 0.9 < mask.sum() < 42 * 32
    window.studio.flush()
    assert np.array_equal(saved_mask(project), mask)

    # A second outline closed with Enter; Esc drops a half-drawn one.
    for x, y in ((70, 70), (90, 70), (80, 90)):
        click(canvas, x, y)
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    assert canvas.mask()[75, 80]
    click(canvas, 5, 80)
    click(canvas, 15, 80)
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    assert canvas.polygon_points() == []

    # Undo takes back the whole triangle, then the whole rectangle, as brush strokes do.
    window.undo_action.trigger()
    assert not canvas.mask()[75, 80] and canvas.mask()[30, 30]
    window.undo_action.trigger()
    assert not canvas.mask().any()
    window.redo_action.trigger()
    assert canvas.mask()[30, 30]


def test_next_and_previous_image_keys_work_from_a_spin_box(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 0))
    spin = window.panels["defects"].steps_spin
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    steps = spin.value()

    qtbot.keyClick(spin, Qt.Key.Key_PageDown)
    assert window.controller.current == Selection("support", "scratch", 1)
    qtbot.keyClick(spin, Qt.Key.Key_PageDown)  # on to the good images
    good = Workspace.open(project).project.good_images[0].image
    assert window.controller.current == Selection("good", good)
    qtbot.keyClick(spin, Qt.Key.Key_PageUp)
    assert window.controller.current == Selection("support", "scratch", 1)
    assert spin.value() == steps  # the spin box did not take the keys
    # From the tree, too.
    window.tree.setFocus()
    qtbot.keyClick(window.tree, Qt.Key.Key_PageUp)
    assert window.controller.current == Selection("support", "scratch", 0)


def test_image_filter_keeps_unmasked_images_and_the_keys_follow_it(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 1))
    window.canvas.set_tool(Tool.BRUSH)
    from _app_helpers import drag

    drag(window.canvas, [(20, 20), (40, 40)])  # image 1 gets a mask
    window.studio.flush()
    combo = window.project_pane.filter_combo
    combo.setCurrentIndex(combo.findData("unmasked"))
    assert window.tree.image_rows() == [Selection("support", "scratch", 0)]
    window.studio.select(Selection("defect_kind", "scratch"))
    qtbot.keyClick(window.tree, Qt.Key.Key_PageDown)
    assert window.controller.current == Selection("support", "scratch", 0)
    qtbot.keyClick(window.tree, Qt.Key.Key_PageDown)  # the masked image 1 is skipped: nothing after
    assert window.controller.current == Selection("support", "scratch", 0)
    combo.setCurrentIndex(combo.findData("no_boxes"))
    assert [s.kind for s in window.tree.image_rows()] == ["good", "good"]


def test_brightness_and_contrast_change_the_view_never_the_image(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 0))
    canvas = window.canvas
    original = canvas.image().copy()
    canvas.set_mask_opacity(0.0)

    def shown_mean() -> float:
        window.repaint()
        grab = canvas.viewport().grab().toImage()
        centre = grab.pixelColor(grab.width() // 2, grab.height() // 2)
        return (centre.red() + centre.green() + centre.blue()) / 3

    before = shown_mean()
    window.view_controls.brightness.setValue(60)
    assert shown_mean() > before + 60
    window.view_controls.contrast.setValue(200)
    window.canvas.set_tool(Tool.BRUSH)
    from _app_helpers import drag

    drag(canvas, [(20, 20), (30, 30)])  # painting while brightened saves the real image untouched
    window.studio.flush()
    assert np.array_equal(canvas.image(), original)
    support = Workspace.open(project).project.defect_kind("scratch").support[0]
    assert np.array_equal(read_image(project / support.image), original)
    # The levels stay while moving to the next image, and Reset brings the image back.
    window.tree.step_image(1)
    assert canvas.display_levels() == (60, 200)
    window.view_controls.reset_button.click()
    assert canvas.display_levels() == (0, 100)


def test_mask_can_be_hidden_and_recoloured(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 0))
    canvas = window.canvas
    canvas.set_mask_opacity(1.0)
    canvas.set_tool(Tool.BRUSH)
    from _app_helpers import drag

    drag(canvas, [(30, 48), (66, 48)])
    centre = canvas.mapFromScene(QPointF(48, 48))

    def pixel():
        window.repaint()
        return canvas.viewport().grab().toImage().pixelColor(centre)

    combo = window.view_controls.color_combo
    combo.setCurrentIndex(combo.findText("green"))
    shown = pixel()
    assert shown.green() > 200 and shown.red() < 80
    window.mask_action.trigger()  # M hides the overlay
    assert not window.view_controls.mask_check.isChecked()
    hidden = pixel()
    assert (hidden.red(), hidden.green(), hidden.blue()) == tuple(int(v) for v in canvas.image()[48, 48])
    assert canvas.mask()[48, 48]  # hidden, not erased
    window.mask_action.trigger()
    assert pixel().green() > 200
    assert window.settings.mask_color == "#22dd44"  # kept for next time
