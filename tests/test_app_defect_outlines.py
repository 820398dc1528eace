"""The Generate panel's "Paint defect outlines": the kind's masks reach every stage-2 job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from _app_helpers import add_learned_kind_and_set, visible_message_boxes, write_project

from anogen.data.box import Box
from anogen.data.workspace import Workspace
from app.studio import Selection


@pytest.fixture
def project(tmp_path) -> Path:
    root = write_project(tmp_path)
    add_learned_kind_and_set(root)
    workspace = Workspace.open(root)
    mask = np.zeros((96, 96), bool)
    mask[10:40, 20:23] = True
    workspace.write_support_mask("scratch", 0, mask)  # one of its two support images is masked
    workspace.set_boxes(workspace.project.good_images[0].image, [Box(5, 5, 30, 30)])
    workspace.save()
    return root


def _capture(monkeypatch, name: str) -> list:
    import app.panels.generate

    tasks: list = []

    def capture(task, progress, cancel):
        tasks.append(task)
        raise RuntimeError("not generating in this test")

    monkeypatch.setattr(app.panels.generate, name, capture)
    return tasks


def test_outlines_send_the_kinds_masks_to_generate_and_preview(make_window, project, qtbot, monkeypatch):
    generated, previewed = _capture(monkeypatch, "run_generate"), _capture(monkeypatch, "run_preview")
    window = make_window()
    window.open_project(project)
    window.show_panel("generate")
    panel = window.panels["generate"]
    assert not panel.outlines_check.isChecked()  # the paper fills the box

    panel.generate_button.click()
    assert window.engine.wait(20)
    assert generated[-1].shapes is None

    panel.outlines_check.setChecked(True)
    panel.generate_button.click()
    assert window.engine.wait(20)
    kind = Workspace.open(project).project.defect_kinds[0]
    masks = [project / shot.mask for shot in kind.support if shot.mask]
    assert len(masks) == 1 and [Path(p).resolve() for p in generated[-1].shapes] == [m.resolve() for m in masks]

    window.studio.select(Selection("good", window.studio.project.good_images[0].image))
    panel.preview()  # one sample in the image's box, drawn with the same masks
    assert window.engine.wait(20)
    assert [Path(p).resolve() for p in previewed[-1].shapes] == [m.resolve() for m in masks]
    for box in visible_message_boxes():
        box.close()
    window.close()

    again = make_window()  # the choice is kept with the project
    again.open_project(project)
    assert again.panels["generate"].outlines_check.isChecked()
