"""The app's Test step scores a detector exactly as ``anogen evaluate`` does, and a reopened
project shows the same numbers again (issue 12, bugs 1 and 2).

A tiny DRAEM whose run validated on part of the test set, in a project with two support
images from the test set: the app must leave out both (recorded in the checkpoint by
content), compare maps at the detector's resolution, and score every image (the app once
stopped at 400; the slow test scores more).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")


from _data_helpers import TINY_DRAEM, write_hole_category

from anogen.data.workspace import Workspace

METRIC_KEYS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "pixel_aupro", "f1_max", "f1_threshold",
               "n_images", "n_defective", "n_excluded", "n_excluded_support", "n_excluded_validation")


def _trained_project(root: Path, n_good: int, n_hole: int, max_val_images: int) -> dict[str, Path]:
    """A project linked to the category, two support images, and a tiny DRAEM trained on it."""
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig

    workspace = Workspace.create(root, "Test step")
    # 48 px pictures, not the detector's 32 px: the app must score at the evaluation's resolution.
    category = write_hole_category(root / "dataset" / "fabric", size=48, test_good=n_good, test_hole=n_hole,
                                   hole=10)
    workspace.link_dataset(category)
    workspace.add_defect_kind("hole")
    support = [category / "test" / "hole" / f"{i:03d}.png" for i in range(2)]
    for image in support:
        workspace.add_support_image("hole", image, category / "ground_truth" / "hole" / f"{image.stem}_mask.png")
    detector = root / "detectors" / "d1"
    result = train(TrainConfig(data_dir=category, detector="draem", out_dir=detector, steps=2, validate_every=2,
                               max_val_images=max_val_images, overrides=dict(TINY_DRAEM), device="cpu",
                               exclude=support))
    workspace.add_detector("d1", "detectors/d1", "draem", {k: float(v) for k, v in result.best_metrics.items()
                                                          if isinstance(v, (int, float))})
    workspace.save()
    return {"project": root, "category": category, "detector": detector}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    return _trained_project(tmp_path_factory.mktemp("small") / "project", n_good=8, n_hole=8, max_val_images=64)


def _cli_metrics(trained, tmp_path) -> dict:
    from anogen.cli import main

    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--data", str(trained["category"]), "--detector-dir", str(trained["detector"]),
                 "--device", "cpu", "--quiet", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _shown(panel) -> list[str]:
    return [panel.metrics_table.item(r, 1).text() for r in range(panel.metrics_table.rowCount())]


def _app_test(window, project: Path):
    """Open the project and press Test in the Train panel, as a user would; returns the panel."""
    failures = []
    window.engine.jobFailed.connect(lambda job, message, details: failures.append(message))
    assert window.open_project(project)
    window.show_panel("train")
    panel = window.panels["train"]
    panel.device_combo.setCurrentText("cpu")
    assert panel.result_combo.currentText() == "d1"
    panel.test_button.click()
    assert window.engine.wait(600) and not failures, failures
    assert panel.results is not None
    return panel


def _same_numbers(metrics: dict, cli: dict) -> None:
    for key in METRIC_KEYS:  # one scoring core: the same numbers, not merely close ones
        assert metrics.get(key) == cli[key], key
    assert (metrics["protocol"], metrics["checkpoint"]) == (cli["protocol"], cli["checkpoint"])


def test_app_test_gives_the_numbers_of_anogen_evaluate_and_keeps_them_on_reopen(small, make_window, tmp_path):
    cli = _cli_metrics(small, tmp_path)
    n_validation = cli["n_excluded_validation"]
    assert cli["n_excluded_support"] == 2 and n_validation > 0

    panel = _app_test(make_window(), small["project"])
    results = panel.results
    assert len(results.images) == cli["n_images"]
    _same_numbers(results.metrics, cli)
    scored = {t.path.name for t in results.images if t.defect_kind == "hole"}
    assert not scored & {"000.png", "001.png"}  # the support images are not scored
    shown, caption = _shown(panel), panel.metrics_caption.text()
    assert shown[:4] == [f"{cli[k]:.3f}" for k in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap")]
    assert (f"{cli['n_images']} images scored, {2 + n_validation} excluded (2 support, {n_validation} validation)"
            in caption)
    panel.threshold_slider.setValue(450)
    counts = panel.counts_label.text()
    panel.window().close()

    # Reopened: the stored Test, not a validation score nor a new computation.
    again = make_window()
    assert again.open_project(small["project"])
    panel = again.panels["train"]
    assert panel.results is not None and panel.results is not results
    _same_numbers(panel.results.metrics, cli)
    assert _shown(panel) == shown and panel.metrics_caption.text() == caption
    assert panel.threshold() == pytest.approx(0.45) and panel.counts_label.text() == counts
    assert [(t.path, t.label, t.score, t.normalised) for t in panel.results.images] == \
        [(t.path, t.label, t.score, t.normalised) for t in results.images]


def test_a_reopened_project_draws_the_detectors_training_curves(small, make_window):
    from anogen.detection.history import read_history, training_curves

    curves = training_curves(read_history(small["detector"]))
    assert curves.loss.steps and curves.validation  # the fixture's training logged both
    window = make_window()
    assert window.open_project(small["project"])  # a fresh window: nothing drawn live
    panel = window.panels["train"]
    loss, validation = panel.loss_plot.series(), panel.val_plot.series()
    assert loss["loss"].xs == curves.loss.steps and loss["loss"].ys == curves.loss.values
    assert set(validation) == set(curves.validation)
    assert all(validation[name].ys == curve.values for name, curve in curves.validation.items())

    history = small["detector"] / "history.jsonl"
    kept = history.read_text()
    history.write_text("{not json\n")  # damaged: no curves, no crash
    try:
        panel._detector_changed()
        assert not panel.loss_plot.series() and panel.result_combo.currentText() == "d1"
    finally:
        history.write_text(kept)


def test_the_app_exports_a_trained_detector_to_openvino(small, make_window, tmp_path):
    pytest.importorskip("openvino")
    from anogen.detection.runtimes import load_exported

    window = make_window()
    assert window.open_project(small["project"])
    panel = window.panels["train"]
    panel.export_format_combo.setCurrentIndex(panel.export_format_combo.findData("openvino"))
    job = panel.export(tmp_path / "line3-openvino")
    assert window.engine.wait(300) and job.error is None, job.error
    assert (tmp_path / "line3-openvino" / "model.xml").is_file() and "OpenVINO IR matches torch" in \
        panel.result_notes.text()
    assert load_exported(tmp_path / "line3-openvino").runtime == "openvino"


@pytest.mark.slow
def test_app_test_scores_every_image_of_a_large_test_set(make_window, tmp_path):
    # 406 good and 6 defective test images, 2 of them support, at most 8 validated on: over 400 to score.
    large = _trained_project(tmp_path / "project", n_good=406, n_hole=6, max_val_images=8)
    cli = _cli_metrics(large, tmp_path)
    assert cli["n_images"] > 400

    panel = _app_test(make_window(), large["project"])
    assert len(panel.results.images) == cli["n_images"]
    _same_numbers(panel.results.metrics, cli)
