"""The main window driven like a user: paint, draw boxes, reopen, errors, cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from _app_helpers import drag, visible_message_boxes, write_project
from PySide6.QtCore import Qt

from anogen.data.imageio import read_mask
from anogen.data.workspace import Workspace
from app.canvas import Tool
from app.engine import CANCELLED
from app.studio import Selection


@pytest.fixture
def project(tmp_path) -> Path:
    return write_project(tmp_path)


def _manifest(root: Path) -> dict:
    return json.loads((root / "project.json").read_text())


def test_painted_stroke_is_saved_as_mask_png_and_undo_is_saved_too(make_window, project, qtbot):
    window = make_window()
    assert window.open_project(project)
    window.studio.select(Selection("support", "scratch", 0))
    canvas = window.canvas
    canvas.set_tool(Tool.BRUSH)
    canvas.set_brush_radius(4)
    canvas.set_zoom(2.0)
    canvas.centerOn(48, 48)
    drag(canvas, [(20, 40), (50, 40), (70, 40)])
    qtbot.waitUntil(lambda: not window.studio.is_dirty(), timeout=5000)

    support = Workspace.open(project).project.defect_kind("scratch").support[0]
    assert support.mask is not None
    mask = read_mask(project / support.mask)
    assert mask.shape == (96, 96)
    assert mask[40, 20:71].all() and mask[37:44, 45].all()
    assert not mask[30, 45] and not mask[40, 80]
    assert "*" not in window.windowTitle().split("—")[0].replace("[*]", "")

    window.undo_action.trigger()
    qtbot.waitUntil(lambda: not read_mask(project / support.mask).any(), timeout=5000)
    window.redo_action.trigger()
    qtbot.waitUntil(lambda: read_mask(project / support.mask)[40, 50], timeout=5000)


def test_draw_and_move_a_box_updates_the_manifest(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    good = window.studio.project.good_images[0].image
    window.studio.select(Selection("good", good))
    canvas = window.canvas
    assert canvas.tool() == Tool.BOX
    canvas.set_zoom(3.0)
    canvas.centerOn(48, 48)
    drag(canvas, [(20, 20), (40, 30), (50, 45)])
    boxes = _manifest(project)["good_images"][0]["boxes"]
    assert [[b["x0"], b["y0"], b["x1"], b["y1"]] for b in boxes] == [[20, 20, 50, 45]]
    drag(canvas, [(30, 30), (40, 35), (45, 40)])  # drag the inside: move by (15, 10)
    boxes = _manifest(project)["good_images"][0]["boxes"]
    assert [[b["x0"], b["y0"], b["x1"], b["y1"]] for b in boxes] == [[35, 30, 65, 55]]
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Delete)
    assert _manifest(project)["good_images"][0]["boxes"] == []


def test_box_edits_and_a_proposal_are_undone_in_the_project_file(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    good = window.studio.project.good_images[0].image
    window.studio.select(Selection("good", good))
    canvas = window.canvas
    canvas.set_zoom(3.0)
    canvas.centerOn(48, 48)

    def stored() -> list[list[int]]:
        return [[b["x0"], b["y0"], b["x1"], b["y1"]] for b in _manifest(project)["good_images"][0]["boxes"]]

    drag(canvas, [(20, 20), (40, 30), (50, 45)])
    assert stored() == [[20, 20, 50, 45]] and window.undo_action.isEnabled()
    window.undo_action.trigger()
    assert stored() == [] and window.redo_action.isEnabled()
    window.redo_action.trigger()
    assert stored() == [[20, 20, 50, 45]]

    generate = window.panels["generate"]
    window.show_panel("generate")
    generate.boxes_per_image.setValue(2)
    generate.propose()
    assert window.engine.wait(60)
    qtbot.waitUntil(lambda: stored() != [[20, 20, 50, 45]], timeout=5000)
    assert len(stored()) == 2 and canvas.boxes() == [tuple(b) for b in stored()]
    window.undo_action.trigger()  # the proposal replaced the drawn box: undo brings it back
    assert stored() == [[20, 20, 50, 45]] and canvas.boxes() == [(20, 20, 50, 45)]


def test_reopen_restores_selection_panel_and_view(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    good = window.studio.project.good_images[1].image
    window.studio.select(Selection("good", good))
    window.show_panel("generate")
    window.canvas.set_zoom(12.0)  # the image is larger than the view, so the centre matters
    window.canvas.centerOn(30, 60)
    zoom = window.canvas.zoom()
    centre = window.canvas.mapToScene(window.canvas.viewport().rect().center())
    assert abs(centre.x() - 30) < 3 and abs(centre.y() - 60) < 3
    window.close()

    again = make_window()
    assert again.settings.recent_projects()[0] == project.resolve()
    again.open_project(project)
    qtbot.waitUntil(lambda: again.canvas.zoom() == pytest.approx(zoom), timeout=3000)
    assert again.studio.selection == Selection("good", good)
    assert again.current_panel() == "generate"
    centre = again.canvas.mapToScene(again.canvas.viewport().rect().center())
    assert abs(centre.x() - 30) < 3 and abs(centre.y() - 60) < 3


def test_where_boxes_may_go_is_remembered_by_the_project(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    panel = window.panels["generate"]
    panel.foreground_combo.setCurrentText("whole image (textures)")
    window.close()

    again = make_window()
    again.open_project(project)
    assert again.panels["generate"].foreground_combo.currentText() == "whole image (textures)"


def test_missing_model_shows_reason_and_error_dialog_with_details(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    panel = window.panels["defects"]
    missing = str(project / "no-such-model")
    with qtbot.waitSignal(window.engine.jobFailed, timeout=20000):
        panel.set_model(missing)
    assert panel.model_status.text().startswith("✗") and "no-such-model" in panel.model_status.text()
    boxes = visible_message_boxes()
    assert boxes, "an error dialog is shown"
    assert "no-such-model" in boxes[-1].text()
    assert "Traceback" in boxes[-1].detailedText()
    boxes[-1].close()
    assert "no-such-model" in (project / "anogen.log").read_text()


@pytest.mark.timing
def test_cancel_button_stops_a_running_job(make_window, project, qtbot):
    from anogen.jobs import Progress, check_cancel

    def slow(config, progress, cancel):
        for step in range(10_000):
            check_cancel(cancel)
            time.sleep(0.02)
            progress(Progress(step + 1, 10_000, "working"))

    window = make_window()
    window.open_project(project)
    job = window.engine.submit("Slow job", slow, None)
    qtbot.waitUntil(lambda: job.last is not None, timeout=3000)
    assert window.job_area.cancel_button.isEnabled()
    started = time.monotonic()
    with qtbot.waitSignal(window.engine.jobCancelled, timeout=2000):
        qtbot.mouseClick(window.job_area.cancel_button, Qt.MouseButton.LeftButton)
    assert time.monotonic() - started < 2.0 and job.state == CANCELLED
    assert "cancelled" in window.job_area.log.toPlainText()


def test_every_action_has_a_shortcut_listed_in_help(make_window):
    window = make_window()
    rows = window.shortcut_rows()
    assert len(rows) > 30
    assert all(keys for _menu, _action, keys in rows), [r for r in rows if not r[2]]
    names = {action for _menu, action, _keys in rows}
    for expected in ("Undo", "Learn defect embedding", "Preview one sample", "Train detector",
                     "Export detector…", "Open demo project", "Cancel job"):
        assert expected in names
    dialog = window.show_shortcuts()
    assert dialog.table.rowCount() == len(rows)
    dialog.close()


def test_no_panel_cuts_off_its_controls_when_the_task_dock_is_made_narrow(make_window, project, qtbot):
    # The panels scroll vertically only: a row of buttons wider than the dock was cut off
    # (the Defects panel's six mask tools). The dock may not get narrower than its content.
    window = make_window()
    window.open_project(project)
    window.resize(1280, 800)
    window.show()
    dock = window.findChild(type(window.tabs.parentWidget()), "taskDock")
    window.resizeDocks([dock], [150], Qt.Orientation.Horizontal)
    for name, panel in window.panels.items():
        window.show_panel(name)
        qtbot.wait(10)
        needed = panel.body.minimumSizeHint().width()
        assert panel.scroll_area.viewport().width() >= needed, name


def test_a_learned_kind_shows_its_stage1_loss_curve_after_reopening(make_window, project, qtbot):
    import torch

    from anogen.diffusion.embedding_file import LearnedEmbedding, save_embedding

    workspace = Workspace.open(project)
    workspace.add_defect_kind("dent")
    path = save_embedding(project / "embeddings" / "scratch.safetensors",
                          LearnedEmbedding("<scratch>", torch.ones(8), loss_curve=[0.5, 0.4, 0.3]))
    workspace.set_embedding("scratch", path)
    workspace.save()
    window = make_window()
    window.open_project(project)
    window.show_panel("defects")
    panel = window.panels["defects"]
    panel.kind_combo.setCurrentText("scratch")
    assert panel.loss_plot.series()["loss"].ys == [0.5, 0.4, 0.3]
    assert "3 steps" in panel.learn_status.text() and "0.3" in panel.learn_status.text()
    panel.kind_combo.setCurrentText("dent")  # not learned: no curve of another kind stays
    assert not panel.loss_plot.series() and panel.learn_status.text() == ""
    # A damaged file shows no curve and breaks nothing.
    path.write_bytes(b"not safetensors")
    panel.kind_combo.setCurrentText("scratch")
    assert not panel.loss_plot.series()


def test_the_test_image_notes_never_cover_the_heat_map_thumbnails(make_window, project, qtbot):
    # Driven under Xvfb: the note under the gallery got one line of height for its two and
    # was painted over the second row of thumbnails. It now sits above the gallery and claims
    # the lines it needs.
    window = make_window()
    assert window.open_project(project)
    window.show_panel("train")
    panel = window.panels["train"]
    assert panel.results_pane.isVisible()
    panel.result_notes.setText("17 test images scored, most anomalous first. holdout protocol, best checkpoint: "
                               "scored 17 of 36 test images; excluded 9 support image(s) and 10 validation "
                               "image(s). Heat maps are not kept with the project: press Test to compute them again.")
    qtbot.wait(100)
    notes, gallery = panel.result_notes.geometry(), panel.gallery.geometry()
    line = panel.result_notes.fontMetrics().height()
    assert notes.height() >= 2 * line, notes  # all its lines, at the pane's width
    assert notes.bottom() < gallery.top(), (notes, gallery)
