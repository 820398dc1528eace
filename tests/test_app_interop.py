"""File -> Import annotations… and File -> Export generated data…, driven like a user."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt

from anogen.data.generated import GeneratedSetWriter
from anogen.data.imageio import read_mask, write_image
from anogen.data.workspace import Workspace
from app.interop_dialogs import ExportDataDialog, ImportAnnotationsDialog, run_export, run_import
from app.main_window import MainWindow
from app.settings import Settings

# ANOGEN_SCREENSHOTS=docs/screenshots saves the two dialogs for the docs; tests never write there otherwise.
SCREENSHOTS = Path(os.environ.get("ANOGEN_SCREENSHOTS", "/nonexistent"))


@pytest.fixture
def window(qtbot, tmp_path):
    root = tmp_path / "project"
    workspace = Workspace.create(root, "Interop")
    rng = np.random.default_rng(0)
    with GeneratedSetWriter(root / "generated" / "scratch") as writer:
        for index in range(2):
            writer.add(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8), box=(4, 4, 20, 16), source="x.png",
                       defect_kind="scratch", seed=index, model="m", embedding_hash="h", steps=1, guidance=1.0)
    workspace.import_generated_folder("scratch", root / "generated" / "scratch")
    workspace.save()
    workspace.close()
    window = MainWindow(settings=Settings(tmp_path / "settings.ini"), restore_geometry=False)
    window.confirm_close = False
    qtbot.addWidget(window)
    assert window.open_project(root)
    yield window
    window.engine.shutdown()


def _menu_texts(window: MainWindow) -> list[str]:
    file_menu = window.menuBar().actions()[0].menu()
    return [a.text() for a in file_menu.actions()]


def test_import_annotations_from_the_file_menu(window, tmp_path, qtbot):
    assert "&Import annotations..." in _menu_texts(window)
    source = tmp_path / "labelme"
    write_image(source / "a.png", np.full((16, 20, 3), 128, np.uint8))
    (source / "a.json").write_text(json.dumps({
        "shapes": [{"label": "dent", "shape_type": "polygon", "points": [[2, 2], [8, 2], [8, 6]]}],
        "imagePath": "a.png", "imageHeight": 16, "imageWidth": 20}))
    dialog = ImportAnnotationsDialog(window)
    qtbot.addWidget(dialog)
    dialog.format.setCurrentText("labelme")
    dialog.source.setText(str(source))
    dialog.kind.setText("dent=dent")
    if SCREENSHOTS.is_dir():
        dialog.show()
        qtbot.waitExposed(dialog)
        dialog.grab().save(str(SCREENSHOTS / "import-annotations.png"))
    edited = []
    window.studio.projectEdited.connect(edited.append)
    assert run_import(window, dialog)
    kind = window.studio.project.defect_kind("dent")
    assert len(kind.support) == 1 and read_mask(window.studio.resolve(kind.support[0].mask))[3, 6]
    assert "defects" in edited
    # A label the map does not name: an error dialog, and the project is unchanged.
    dialog.kind.setText("other=dent")
    assert not run_import(window, dialog)
    assert any("unknown label 'dent'" in box.text() for box in window._error_boxes)
    assert len(window.studio.project.defect_kind("dent").support) == 1


def test_export_generated_data_from_the_file_menu(window, tmp_path, qtbot):
    assert "E&xport generated data..." in _menu_texts(window)
    workspace = window.studio.workspace
    dialog = ExportDataDialog([(g.name, workspace.resolve(g.folder)) for g in workspace.project.generated_sets],
                              window)
    qtbot.addWidget(dialog)
    assert dialog.sets.item(0).checkState() == Qt.CheckState.Checked
    dialog.format.setCurrentText("yolo")
    dialog.out.setText(str(tmp_path / "yolo"))
    if SCREENSHOTS.is_dir():
        dialog.show()
        qtbot.waitExposed(dialog)
        dialog.grab().save(str(SCREENSHOTS / "export-generated-data.png"))
    assert run_export(window, dialog)
    assert len(list((tmp_path / "yolo" / "labels").iterdir())) == 2
    dialog.sets.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert not run_export(window, dialog)
