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
