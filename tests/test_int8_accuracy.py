"""Issue 14: an exported (or int8) model scores a test set through ``anogen evaluate``'s
core, and ``benchmarks/bench_inference.py --accuracy`` reports each runtime's metrics and
the int8 change. A random-weight tiny DRAEM at 32 px: seconds on one CPU thread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import TINY_DRAEM

from anogen.detection.runtimes import RUNTIME_TOLERANCE

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def accuracy(monkeypatch):
    """``benchmarks/inference_accuracy.py``, imported as the benchmark script imports it."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import inference_accuracy

    return inference_accuracy


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    from anogen.data.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("data")
    write_demo_dataset(root, categories=("fabric",), size=48, seed=3, train_good=3, test_good=2, test_per_kind=2)
    return root / "fabric"


@pytest.fixture(scope="module")
def run(category, tmp_path_factory) -> Path:
    """A training-run folder holding a random-weight tiny DRAEM whose run recorded ``category``."""
    import torch

    from anogen.detection.checkpoint import CheckpointInfo, ScoreCalibration, save_checkpoint
    from anogen.detection.registry import build_detector

    torch.manual_seed(0)
    detector = build_detector("draem", preset="quick", overrides=TINY_DRAEM).eval()
    info = CheckpointInfo(kind="draem", preset="quick", config=detector.config.to_dict(), image_size=32,
                          calibration=ScoreCalibration(threshold=0.4, score_min=0.1, score_max=0.9),
                          step=1, total_steps=1, provenance={"data_dir": str(category)})
    folder = tmp_path_factory.mktemp("runs") / "detectors" / "fabric" / "baseline"
    save_checkpoint(folder / "best", detector, info)
    return folder


def test_an_exported_model_scores_the_test_set_like_its_checkpoint(category, run, tmp_path):
    from anogen.detection.checkpoint import ScoreCalibration, load_detector
    from anogen.detection.evaluate import score_test_set
    from anogen.detection.export import export_loaded_onnx
    from anogen.detection.runtimes import ExportedModel, load_onnx
    from anogen.errors import InputError

    export_loaded_onnx(load_detector(run, device="cpu"), tmp_path / "model.onnx")
    torch_scores = score_test_set(category, run, device="cpu")
    onnx_scores = score_test_set(category, run, model=load_onnx(tmp_path / "model.onnx", threads=1))
    assert [r.path for r in onnx_scores.records] == [r.path for r in torch_scores.records]
    assert np.abs(onnx_scores.maps - torch_scores.maps).max() <= RUNTIME_TOLERANCE
    assert np.abs(onnx_scores.scores - torch_scores.scores).max() <= RUNTIME_TOLERANCE
    assert onnx_scores.metrics.n_images == torch_scores.metrics.n_images == 8

    other = ExportedModel(runtime="onnx", path=tmp_path / "other.onnx", kind="draem", image_size=64,
                          calibration=ScoreCalibration(0.5, 0.0, 1.0), run=lambda images: (images, images))
    with pytest.raises(InputError, match="input size 64 px.*takes 32 px"):
        score_test_set(category, run, model=other)


def test_training_runs_are_found_under_a_report_folder(accuracy, tmp_path):
    for name in ("detectors/fabric/baseline/best", "detectors/fabric/generated/last", "detectors/fabric/generated/best",
                 "other/best"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "detector.json").write_text("{}")
    (tmp_path / "data" / "fabric" / "train").mkdir(parents=True)
    runs = accuracy.find_training_runs(tmp_path)
    assert runs == [tmp_path / "detectors/fabric/baseline", tmp_path / "detectors/fabric/generated",
                    tmp_path / "other"]
    assert accuracy.find_training_runs(runs[1]) == [runs[1]]
    assert accuracy.find_training_runs(tmp_path / "data") == []


def test_int8_deltas_are_against_the_same_runtime_in_fp32(accuracy):
    metrics = {"torch": {"image_auroc": 0.9, "pixel_auroc": 0.8, "pixel_ap": 0.3, "pixel_aupro": 0.5},
               "onnx": {"image_auroc": 0.9, "pixel_auroc": 0.8, "pixel_ap": 0.3, "pixel_aupro": 0.5},
               "onnx_int8": {"image_auroc": 0.85, "pixel_auroc": 0.81, "pixel_ap": 0.3, "pixel_aupro": None},
               "openvino": {"image_auroc": 0.7, "pixel_auroc": 0.8, "pixel_ap": 0.3, "pixel_aupro": 0.5}}
    deltas = accuracy.metric_deltas(metrics)
    assert set(deltas) == {"onnx_int8"}  # no openvino_int8 (nncf missing): no delta
    assert deltas["onnx_int8"]["image_auroc"] == pytest.approx(-0.05)
    assert deltas["onnx_int8"]["pixel_auroc"] == pytest.approx(0.01)
    assert deltas["onnx_int8"]["pixel_ap"] == 0.0 and deltas["onnx_int8"]["pixel_aupro"] is None
    result = {"date": "2026-01-01", "calibration": "3 training good image(s)",
              "environment": {"cpu": "cpu", "threads": 1, "torch": "t", "onnxruntime": "o", "openvino": "v",
                              "nncf": None},
              "targets": [{"label": "detectors/fabric/baseline", "kind": "draem", "preset": "quick",
                           "image_size": 32, "checkpoint": "best", "n_scored": 8, "metrics": metrics,
                           "int8_delta": deltas}]}
    table = accuracy.accuracy_markdown(result).splitlines()
    assert "nncf not installed" in table[0] and "3 training good image(s)" in table[0]
    assert table[2] == "| detector | runtime | image AUROC | pixel AUROC | pixel AP | AUPRO |"
    assert table[4].startswith("| detectors/fabric/baseline (draem quick, 32 px, best; 8 test images) | torch |")
    assert table[6] == "|  | onnx_int8 | 0.8500 (-0.0500) | 0.8100 (+0.0100) | 0.3000 (+0.0000) | n/a (n/a) |"


def test_the_accuracy_mode_calibrates_on_training_images_and_scores_every_runtime(accuracy, category, run,
                                                                                  monkeypatch):
    from anogen.detection import evaluate

    seen: list[Path] = []
    read = accuracy.calibration_batches

    def calibration(data_dir, size, count):
        batches = read(data_dir, size, count)
        seen.append(Path(data_dir))
        return batches

    monkeypatch.setattr(accuracy, "calibration_batches", calibration)
    result = accuracy.run_accuracy(run.parents[2], None, 1, None, None, {"threads": 1})
    [target] = result["targets"]
    assert seen == [category] and target["calibration_images"] == 3  # train/good: the 3 training images
    assert target["label"] == "detectors/fabric/baseline" and target["data_dir"] == str(category)
    assert list(target["metrics"]) == ["torch", "onnx", "openvino", "onnx_int8"]  # no nncf: no openvino_int8
    expected = evaluate.evaluate(category, run, device="cpu").to_json()
    assert target["metrics"]["torch"] == {key: expected[key] for key in accuracy.ACCURACY_METRICS}
    for runtime in ("onnx", "openvino"):
        for key, value in target["metrics"][runtime].items():
            assert value == pytest.approx(expected[key], abs=0.02), (runtime, key)
    assert set(target["int8_delta"]) == {"onnx_int8"}
    json.dumps(result)  # what the benchmark writes
