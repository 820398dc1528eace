"""The app with a project another process holds, and with GUI state of the wrong shape (issue 15)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from anogen.data.imageio import write_image
from anogen.data.workspace import Workspace
from app.main_window import MainWindow
from app.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    source = tmp_path / "good.png"
    write_image(source, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with Workspace.create(tmp_path / "project", "Locked") as workspace:
        workspace.add_defect_kind("scratch")
        workspace.add_good_images([source])
        workspace.save()
    return tmp_path / "project"


@pytest.fixture
def window(qtbot, tmp_path):
    window = MainWindow(settings=Settings(tmp_path / "settings.ini"), restore_geometry=False)
    window.confirm_close = False
    qtbot.addWidget(window)
    window.show()
    yield window
    window.engine.shutdown()


def test_gui_state_of_the_wrong_type_does_not_crash_the_app(window, project) -> None:
    data = json.loads((project / "project.json").read_text())
    data["view"] = {"panel": [], "selection": {"kind": ["good"]}, "canvas": "zoomed", "tool": {}}
    (project / "project.json").write_text(json.dumps(data))
    assert window.open_project(project)  # raised TypeError: unhashable type: 'list'
    assert window.studio.project.name == "Locked"


_HOLDER = """
import sys
from anogen.data.workspace import Workspace
ws = Workspace.open(sys.argv[1], read_only=False)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_project_open_elsewhere_opens_read_only_and_says_who_has_it(window, project, qtbot) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(project)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = (project / "project.json").read_bytes()
        assert window.open_project(project)
        assert window.studio.workspace.read_only
        assert f"read-only: opened by pid {holder.pid} on host {socket.gethostname()}" in window.windowTitle()
        window.studio.workspace.add_defect_kind("dent")
        with qtbot.waitSignal(window.studio.saveFailed, timeout=5000) as blocker:
            window.studio.edited("defects")
        assert f"pid {holder.pid}" in blocker.args[0] and "not saved" in blocker.args[0]
        assert (project / "project.json").read_bytes() == before
    finally:
        holder.communicate("\n", timeout=30)
    window.close_project()
    assert window.open_project(project)  # the holder is gone: writable again
    assert not window.studio.workspace.read_only and "read-only" not in window.windowTitle()


def test_a_moved_dataset_is_asked_for_and_re_pointed(window, tmp_path, monkeypatch) -> None:
    from PySide6.QtWidgets import QFileDialog

    dataset = tmp_path / "dataset"
    for index in range(2):
        write_image(dataset / "train" / "good" / f"{index}.png", np.zeros((32, 32, 3), np.uint8))
    with Workspace.create(tmp_path / "linked", "Linked") as workspace:
        workspace.link_dataset(dataset)
        workspace.save()
    moved = dataset.rename(tmp_path / "moved")
    asked = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda parent, caption, start: asked.append(caption) or str(moved))
    assert window.open_project(tmp_path / "linked")
    assert len(asked) == 1 and str(dataset) in asked[0]
    assert window.studio.workspace.project.linked_datasets == [str(moved)]
    assert json.loads((tmp_path / "linked" / "project.json").read_text())["linked_datasets"] == [str(moved)]
