"""Learn -> Preview -> Generate -> Train -> Test -> Export through the GUI panels, with a
tiny random diffusion model and a tiny dataset (results are noise; the plumbing is real)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from _data_helpers import write_hole_category
from PySide6.QtWidgets import QFileDialog, QMessageBox

from anogen.data.imageio import list_images
from anogen.data.workspace import Workspace
from app.main_window import MainWindow
from app.settings import Settings
from app.studio import Selection


@pytest.fixture
def tiny_project(tmp_path) -> Path:
    from anogen.diffusion.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-sd", "sd1", resolution=64)
    root = tmp_path / "project"
    workspace = Workspace.create(root, "Tiny")
    category = write_hole_category(root / "dataset" / "fabric", size=64, test_good=2, test_hole=3, hole=12)
    workspace.link_dataset(category)
    workspace.add_defect_kind("hole", init_word="hole")
    for image in list_images(category / "test" / "hole")[:2]:
        workspace.add_support_image("hole", image, category / "ground_truth" / "hole" / f"{image.stem}_mask.png")
    workspace.project.model = str(model)
    workspace.save()
    return root


@pytest.mark.slow
def test_learn_preview_generate_train_export_through_the_panels(qtbot, tmp_path, tiny_project, monkeypatch):
    window = MainWindow(settings=Settings(tmp_path / "settings.ini"), restore_geometry=False)
    window.confirm_close = False
    qtbot.addWidget(window)
    window.show()
    failures = []
    window.engine.jobFailed.connect(lambda job, message, details: failures.append((job.title, message, details)))
    assert window.open_project(tiny_project)
    engine = window.engine

    # Stage 1: Learn with a live loss curve; the embedding lands in the project.
    defects = window.panels["defects"]
    defects.steps_spin.setValue(3)
    defects.batch_spin.setValue(2)
    defects.device_combo.setCurrentText("cpu")
    assert defects.learn_button.isEnabled()
    defects.learn_button.click()
    assert engine.wait(120) and not failures, failures
    kind = window.studio.project.defect_kind("hole")
    assert kind.embedding and (tiny_project / kind.embedding).is_file()
    assert len(defects.loss_plot.series()["loss"].xs) == 3

    # Stage 2: propose a box on a good image, preview one sample, generate a set.
    generate = window.panels["generate"]
    window.show_panel("generate")
    good = window.studio.project.good_images[0]
    window.studio.select(Selection("good", good.image))
    generate.boxes_per_image.setValue(1)
    generate.propose()
    assert engine.wait(60) and not failures, failures
    assert len(window.studio.project.good_image(good.image).boxes) == 1
    boxes = window.studio.project.good_image(good.image).boxes
    assert window.canvas.boxes() == [(b.x0, b.y0, b.x1, b.y1) for b in boxes]
    generate.steps_spin.setValue(2)
    generate.device_combo.setCurrentText("cpu")
    assert generate.preview_button.isEnabled()
    generate.preview_button.click()
    assert engine.wait(120) and not failures, failures
    assert generate.last_preview is not None and window.canvas.compare_split() is not None
    generate.per_box_spin.setValue(2)  # one box on one image: 2 samples
    generate.generate_button.click()
    assert engine.wait(120) and not failures, failures
    [generated] = window.studio.project.generated_sets
    assert len(generated.samples) == 2 and generate.gallery.count() == 2
    generate.gallery.setCurrentRow(0)
    generate.set_status("rejected")
    reopened = Workspace.open(tiny_project)
    assert reopened.project.generated_sets[0].samples[0].status == "rejected"
    generate.gallery.setCurrentRow(1)
    old_seed, old_bytes = generated.samples[1].seed, (tiny_project / generated.samples[1].image).read_bytes()
    generate.regenerate_button.click()
    assert engine.wait(120) and not failures, failures
    assert generated.samples[1].seed != old_seed and generated.samples[1].status == "pending"
    assert (tiny_project / generated.samples[1].image).read_bytes() != old_bytes

    # Stage 3: one button, then the test images appear with heat maps; export ONNX.
    train = window.panels["train"]
    window.show_panel("train")
    train.steps_spin.setValue(2)
    train.size_spin.setValue(64)
    train.device_combo.setCurrentText("cpu")
    train.preset_combo.setCurrentText("quick")
    assert train.set_combo.currentData() == generated.name
    train.train_button.click()
    assert engine.wait(300) and not failures, failures
    [detector] = window.studio.project.detectors
    assert (tiny_project / detector.folder).is_dir()
    assert train.results is not None and train.gallery.count() == len(train.results.images) > 0
    scores = [t.normalised for t in train.results.images]
    train.threshold_slider.setValue(0)
    assert train.pass_fail_counts() == (0, len(scores))
    train.threshold_slider.setValue(500)
    failed = sum(1 for s in scores if s >= 0.5)
    assert train.pass_fail_counts() == (len(scores) - failed, failed)
    assert train.counts_label.text().startswith(f"{len(scores) - failed} pass · {failed} fail")
    train.gallery.setCurrentRow(0)
    assert window.canvas.image() is not None
    # Export asks where to save: answer the dialog as a user would.
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *args, **kwargs: (str(tiny_project / detector.folder / "model.onnx"), ""))
    train.export_button.click()
    assert engine.wait(120) and not failures, failures
    assert (tiny_project / detector.folder / "model.onnx").is_file()
    assert not [w for w in window.findChildren(QMessageBox) if w.isVisible()]
    window.close()
