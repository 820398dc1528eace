"""The bugs an inspection engineer hit driving the app (issue 12), each driven like a user."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402
from _app_helpers import add_learned_kind_and_set, drag, window_factory, write_project  # noqa: E402
from anogen.data.workspace import Workspace  # noqa: E402
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


# ---------------------------------------------------------------- bug 13
def test_add_kind_leaves_no_other_kinds_image_to_paint_on(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 0))
    assert window.canvas.has_image()
    defects = window.panels["defects"]

    assert defects.add_kind("dent", "dent")
    assert defects.current_kind() == "dent"
    # The canvas must not keep showing (and editing) scratch's first support image.
    assert not window.canvas.has_image()
    assert window.controller.current == Selection("defect_kind", "dent")
    assert window.studio.selection.name == "dent"
    window.canvas.set_tool(Tool.BRUSH)
    drag(window.canvas, [(20, 40), (50, 40), (70, 40)])
    window.studio.flush()
    scratch = Workspace.open(project).project.defect_kind("scratch")
    assert all(s.mask is None for s in scratch.support)

    # Back on scratch, its image is shown again and editable.
    defects.kind_combo.setCurrentText("scratch")
    assert window.controller.current == Selection("support", "scratch", 0)
    assert window.canvas.has_image() and window.canvas.mask() is not None


def test_removing_the_shown_support_image_reloads_the_canvas(make_window, project, qtbot):
    from anogen.data.imageio import read_image

    window = make_window()
    window.open_project(project)
    defects = window.panels["defects"]
    window.studio.select(Selection("support", "scratch", 0))
    defects.gallery.setCurrentRow(0)
    defects.remove_support()
    remaining = window.studio.project.defect_kind("scratch").support
    assert len(remaining) == 1
    # Strokes now go to support 0, which is the other image: the canvas must show that one.
    assert window.controller.current == Selection("support", "scratch", 0)
    assert (window.canvas.image() == read_image(project / remaining[0].image)).all()


def test_removing_the_last_kind_clears_the_canvas(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 1))
    window.panels["defects"].delete_kind("scratch")
    assert not window.canvas.has_image() and window.controller.current is None


# ---------------------------------------------------------------- bug 3
def test_regenerate_shows_the_new_image_and_keeps_the_sample_selected(make_window, project, qtbot, monkeypatch):
    import app.tasks
    from anogen.data.imageio import read_image
    from app.tasks import PreviewResult

    name = add_learned_kind_and_set(project)
    new_image = np.full((96, 96, 3), 250, np.uint8)

    def fake_preview(task, progress, cancel):  # the diffusion model is not what this test is about
        return PreviewResult(read_image(task.image), new_image.copy(), task.box, task.seed)

    monkeypatch.setattr(app.tasks, "run_preview", fake_preview)
    window = make_window()
    window.open_project(project)
    window.show_panel("generate")
    panel = window.panels["generate"]
    assert panel.set_combo.currentText() == name
    panel.gallery.setCurrentRow(1)
    assert window.studio.selection == Selection("sample", name, 1)
    assert not (window.canvas.image() == 250).all()

    assert panel.regenerate_action.isEnabled()
    panel.regenerate_action.trigger()  # Ctrl+Shift+R
    assert window.engine.wait(30)
    sample = window.studio.project.generated_set(name).samples[1]
    assert (read_image(project / sample.image) == 250).all()
    assert panel.gallery.selected_keys() == [1]
    assert window.studio.selection == Selection("sample", name, 1)
    assert (window.canvas.image() == 250).all(), "the canvas shows the regenerated image"
    assert window.canvas.compare_split() is not None
