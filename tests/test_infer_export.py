"""Inference (maps at input size, calibrated scores, heat maps), ONNX export, evaluation exclusions."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anogen.detection import export as export_module
from anogen.detection.checkpoint import CheckpointInfo, ScoreCalibration, load_detector, save_checkpoint
from anogen.detection.export import EXPORTER_ENV, EXPORTERS, OPSET, TORCHSCRIPT, export_onnx, run_onnx
from anogen.detection.infer import heatmap_overlay, predict
from anogen.errors import InputError, ModelError

TINY = {
    "draem": {"image_size": 32, "batch_size": 2, "recon_base_width": 4, "disc_base_width": 4},
    "destseg": {"image_size": 32, "batch_size": 2, "teacher_embedding_size": 8, "teacher_hidden_sizes": [8, 16, 32],
                "student_embedding_size": 8, "student_hidden_sizes": [8, 16, 16, 16], "seg_width": 16,
                "top_k": 10, "steps": 4, "student_steps": 2},
}


def saved_detector(kind: str, folder: Path, calibration: ScoreCalibration | None = None) -> Path:
    from anogen.detection.registry import build_detector

    torch.manual_seed(1)
    detector = build_detector(kind, preset="quick", overrides=TINY[kind]).eval()
    info = CheckpointInfo(kind=kind, preset="quick", config=detector.config.to_dict(), image_size=32,
                          calibration=calibration or ScoreCalibration(threshold=0.5, score_min=0.0, score_max=1.0),
                          step=1, total_steps=1)
    save_checkpoint(folder, detector, info)
    return folder


def test_predict_gives_maps_at_input_size_and_calibrated_scores(tmp_path):
    folder = saved_detector("draem", tmp_path / "det")
    loaded = load_detector(folder, device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8), rng.random((32, 32, 3)).astype(np.float32),
              rng.integers(0, 256, (20, 70, 3), dtype=np.uint8)]
    predictions = predict(loaded, images, batch_size=2)

    assert [p.anomaly_map.shape for p in predictions] == [(48, 40), (32, 32), (20, 70)]
    # The score is the detector's own score of the map at its input size.
    exact = torch.from_numpy(images[1].transpose(2, 0, 1)[None].copy())
    anomaly_map, score = loaded.detector.predict(exact)
    assert predictions[1].score == pytest.approx(float(score[0]), abs=1e-6)
    assert np.allclose(predictions[1].anomaly_map, anomaly_map[0, 0].numpy(), atol=1e-6)
    # The validation threshold decides; normalisation maps it to 0.5 and keeps the order.
    scores = sorted(p.score for p in predictions)
    loaded.info.calibration = ScoreCalibration(threshold=scores[1], score_min=scores[0] - 1, score_max=scores[2] + 1)
    again = predict(loaded, images)
    assert [p.is_anomalous for p in again] == [p.score >= scores[1] for p in predictions]
    expected = [0.5 + (p.score - scores[1]) / (scores[2] - scores[0] + 2) for p in predictions]
    assert [p.normalised_score for p in again] == pytest.approx(expected)
    with pytest.raises(InputError, match="RGB"):
        predict(loaded, [np.zeros((8, 8, 5), np.uint8)])


def test_heatmap_overlay_is_hot_where_the_map_is_high():
    image = np.full((20, 30, 3), 128, np.uint8)
    anomaly_map = np.zeros((10, 15), np.float32)
    anomaly_map[:, 10:] = 1.0  # right third anomalous (map at half resolution is resized)
    overlay = heatmap_overlay(image, anomaly_map, alpha=0.6)
    assert overlay.shape == (20, 30, 3) and overlay.dtype == np.uint8
    hot, cold = overlay[:, 25], overlay[:, 2]
    assert hot[:, 0].mean() > hot[:, 2].mean() + 50  # red on the anomaly
    assert cold[:, 2].mean() > cold[:, 0].mean() + 50  # blue elsewhere


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", ["draem", "destseg"])
def test_onnx_export_matches_torch(kind, exporter, tmp_path, monkeypatch):
    """Each exporter, on its own (no fallback), reproduces torch with a dynamic batch axis."""
    import onnx

    monkeypatch.setenv(EXPORTER_ENV, exporter)
    folder = saved_detector(kind, tmp_path / kind)
    result = export_onnx(folder)
    assert result.path == folder / "model.onnx" and result.path.is_file()
    assert result.exporter == exporter
    graph = onnx.load(str(result.path))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [OPSET[exporter]]
    assert [v.name for v in graph.graph.input] == ["image"]
    assert [v.name for v in graph.graph.output] == ["anomaly_map", "score"]
    assert {p.key: p.value for p in graph.metadata_props}["kind"] == kind
    loaded = load_detector(folder, device="cpu")
    images = np.random.default_rng(2).random((3, 3, 32, 32)).astype(np.float32)  # another batch size
    onnx_map, onnx_score = run_onnx(result.path, images)
    torch_map, torch_score = loaded.detector.predict(torch.from_numpy(images))
    assert onnx_map.shape == (3, 1, 32, 32) and onnx_score.shape == (3,)
    assert np.abs(onnx_map - torch_map.numpy()).max() < 1e-4
    assert np.abs(onnx_score - torch_score.numpy()).max() < 1e-4


def test_the_legacy_exporter_stands_in_when_the_current_one_is_missing_or_fails(tmp_path, monkeypatch, caplog):
    folder = saved_detector("draem", tmp_path / "det")
    monkeypatch.setenv(EXPORTER_ENV, "dynamo")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if onnxscript were not installed
    with caplog.at_level("WARNING", logger=export_module.__name__):
        result = export_onnx(folder)
    assert result.exporter == TORCHSCRIPT and result.path.is_file()
    assert "dynamo ONNX exporter failed (the onnxscript package is not installed)" in caplog.text
    assert result.max_abs_diff_map < 1e-4 and result.max_abs_diff_score < 1e-4

    def broken(wrapper, example):
        raise RuntimeError("unsupported operator\nmore detail")

    for name in EXPORTERS:
        monkeypatch.setitem(export_module._EXPORT, name, broken)
    with pytest.raises(ModelError, match="no ONNX exporter could export the detector.*unsupported operator"):
        export_onnx(folder, tmp_path / "none.onnx")
    assert not (tmp_path / "none.onnx").exists()
    monkeypatch.setenv(EXPORTER_ENV, "fastest")
    with pytest.raises(ModelError, match="ANOGEN_ONNX_EXPORTER='fastest'"):
        export_onnx(folder, tmp_path / "none.onnx")


def test_export_of_a_missing_detector_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        export_onnx(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no 'best' checkpoint"):
        export_onnx(tmp_path / "empty")


def test_evaluate_excludes_support_images_and_counts_them(tmp_path):
    from anogen.data.demo import write_demo_dataset
    from anogen.detection.evaluate import evaluate

    write_demo_dataset(tmp_path / "data", categories=("fabric",), size=32, seed=1, train_good=1, test_good=3,
                       test_per_kind=2)
    category = tmp_path / "data" / "fabric"
    folder = saved_detector("draem", tmp_path / "det")
    everything = evaluate(category, folder, device="cpu")
    assert everything.n_images == 9 and everything.n_excluded == 0

    # A support image copied into a project folder is still recognised (by content).
    support = tmp_path / "project" / "support.png"
    support.parent.mkdir()
    shutil.copy(category / "test" / "hole" / "000.png", support)
    report = evaluate(category, folder, [support, category / "test" / "stain" / "001.png"], device="cpu")
    assert report.n_images == 7 and report.n_defective == 4 and report.n_excluded == 2
    assert any("2 support image(s)" in note for note in report.notes)
    assert set(report.to_json()) >= {"image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "pixel_aupro"}
