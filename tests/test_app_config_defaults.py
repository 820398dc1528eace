"""The app's settings start at the library's defaults and offer its ranges
(anogen.diffusion.config, anogen.detection.train_config), and its jobs get typed configs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from _app_helpers import write_project

from anogen.data.workspace import Workspace
from anogen.detection.train_config import TRAIN_RANGES, TrainConfig
from anogen.diffusion.config import (
    APP_LEARN_STEPS,
    BOXES_PER_IMAGE,
    BOXES_PER_IMAGE_RANGE,
    GENERATE_RANGES,
    LEARN_RANGES,
    SAMPLES_PER_BOX,
    SAMPLES_PER_BOX_RANGE,
    GenerateConfig,
    LearnConfig,
)
from anogen.ranges import FieldRange
from app.tasks import AUTO_PRESET


def _check(spin, limits: FieldRange, value) -> None:
    assert (spin.minimum(), spin.maximum()) == pytest.approx((limits.minimum, limits.maximum))
    assert spin.value() == pytest.approx(value)


def test_the_panels_start_at_the_config_defaults_and_offer_its_ranges(make_window, tmp_path):
    window = make_window()
    window.open_project(write_project(tmp_path))
    defects, generate, train = (window.panels[n] for n in ("defects", "generate", "train"))

    _check(defects.steps_spin, LEARN_RANGES["steps"], APP_LEARN_STEPS)  # the app's CPU length, on purpose
    _check(defects.lr_spin, LEARN_RANGES["lr"], LearnConfig.lr)
    _check(defects.batch_spin, LEARN_RANGES["batch_size"], LearnConfig.batch_size)
    _check(defects.seed_spin, LEARN_RANGES["seed"], LearnConfig.seed)
    assert defects.crop_combo.currentText() == LearnConfig.crop_to_defect
    assert (defects.scale_lr_check.currentIndex() == 1) == LearnConfig.scale_lr
    _check(defects.resolution_spin, LEARN_RANGES["resolution"], 0)  # 0 = the model's own: LearnConfig's None
    assert LearnConfig.resolution is None and defects.resolution_spin.text() == "model's own"
    assert defects.subject_edit.text() == LearnConfig.subject == ""  # the paper's captions

    for name in ("steps", "guidance", "strength", "feather", "seed"):
        _check(getattr(generate, f"{name}_spin"), GENERATE_RANGES[name], getattr(GenerateConfig, name))
    _check(generate.per_box_spin, SAMPLES_PER_BOX_RANGE, SAMPLES_PER_BOX)
    _check(generate.boxes_per_image, BOXES_PER_IMAGE_RANGE, BOXES_PER_IMAGE)
    assert generate._generate_config() == GenerateConfig()  # every field the panel sets is at its default

    for name in ("tau", "mix", "seed"):
        _check(getattr(train, f"{name}_spin"), TRAIN_RANGES[name], getattr(TrainConfig, name))
    # Steps offers one value below the range, 0, shown as "preset default" (steps None).
    assert (train.steps_spin.minimum(), train.steps_spin.maximum()) == (0, TRAIN_RANGES["steps"].maximum)
    config = train._train_config(Workspace.open(window.studio.workspace.root), tmp_path / "cat", tmp_path / "out")
    assert isinstance(config, TrainConfig) and config.preset == AUTO_PRESET
    assert (config.steps, config.tau, config.mix, config.seed) == (TrainConfig.steps, TrainConfig.tau,
                                                                   TrainConfig.mix, TrainConfig.seed)


def test_run_train_resolves_the_auto_preset_on_the_job_thread(monkeypatch, tmp_path):
    import torch

    import anogen.detection.train as train_module
    from app.tasks import run_train

    seen: list[TrainConfig] = []
    monkeypatch.setattr(train_module, "train", lambda config, progress, cancel: seen.append(config))
    config = TrainConfig(data_dir=tmp_path, detector="draem", out_dir=tmp_path / "run", preset=AUTO_PRESET)
    for gpu, preset in ((False, "quick"), (True, "paper")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        run_train(config, lambda report: None, None)
        assert seen[-1].preset == preset
    run_train(TrainConfig(data_dir=tmp_path, detector="draem", out_dir=Path("run"), preset="paper"),
              lambda report: None, None)
    assert seen[-1].preset == "paper" and config.preset == AUTO_PRESET  # the panel's config is left as it was


def test_the_demo_project_learns_at_the_size_the_demo_measured_best(make_window, tmp_path, monkeypatch):
    """The demo model is 64 px; the demo fabric learns (and paints) its weave at 128 px
    (docs/demo.md), so the demo project starts there and Learn passes it on, with the
    demo's captions."""
    import threading

    from anogen.demo_pipeline import SUBJECTS, DemoPlan
    from app.main_window import build_demo_project

    folder = build_demo_project(tmp_path / "demo", lambda _report: None, threading.Event())
    window = make_window()
    window.open_project(folder)
    defects = window.panels["defects"]
    assert defects.resolution_spin.value() == DemoPlan.quick().model_resolution == 128
    assert defects.subject_edit.text() == (SUBJECTS["fabric"] if DemoPlan.quick().subject_captions else "")

    submitted = []
    monkeypatch.setattr(window.studio.engine, "submit", lambda name, fn, task, **kw: submitted.append(task))
    window.studio.project.model = "some-model"  # Learn only needs a model that passed (or was never) checked
    defects.learn()
    [task] = submitted
    assert task.learn.resolution == 128
    assert task.learn.subject == defects.subject_edit.text()

    defects.resolution_spin.setValue(0)  # back to "model's own"
    defects.subject_edit.setText(" woven fabric ")  # the captions name what the photos show
    defects.subject_edit.editingFinished.emit()
    defects._learn_job = None
    defects.learn()
    assert submitted[-1].learn.resolution is None
    assert submitted[-1].learn.subject == "woven fabric"
    assert window.studio.view_state()["settings"]["defects"]["subject"] == "woven fabric"  # kept with the project
