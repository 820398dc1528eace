"""Issue 14 section 4: ``anogen export --format openvino`` and ``anogen predict --runtime
torch|onnx|openvino`` give the same maps and scores within RUNTIME_TOLERANCE, carry the
score calibration, and a missing or damaged exported model is one line (exit 2).

A tiny DRAEM is trained here (4 steps at 32 px on a tiny demo category, so its
calibration comes from a real validation) and a tiny DeSTSeg is built with a hand-set
calibration; both run in seconds on one CPU thread.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _cli_helpers import one_line_error
from _data_helpers import TINY_DRAEM

from anogen.cli import main
from anogen.data.demo import write_demo_dataset
from anogen.detection.checkpoint import ScoreCalibration, read_checkpoint_info
from anogen.detection.export import EXPORTER_ENV, EXPORTERS, OPENVINO_XML
from anogen.detection.infer import predict
from anogen.detection.options import RUNTIMES
from anogen.detection.runtimes import RUNTIME_TOLERANCE, inference_model, load_exported
from anogen.outputs import MARKER_NAME

TINY_DESTSEG = {"image_size": 32, "batch_size": 2, "teacher_embedding_size": 8, "teacher_hidden_sizes": [8, 16, 32],
                "student_embedding_size": 8, "student_hidden_sizes": [8, 16, 16, 16], "seg_width": 16,
                "top_k": 10, "steps": 4, "student_steps": 2, "allow_random_teacher": True}


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_demo_dataset(root, categories=("fabric",), size=48, seed=3, train_good=4, test_good=2, test_per_kind=2)
    return root / "fabric"


@pytest.fixture(scope="module")
def detectors(category, tmp_path_factory) -> dict[str, Path]:
    """A trained tiny DRAEM and a built tiny DeSTSeg, each a training-run folder."""
    import torch

    from anogen.detection.checkpoint import CheckpointInfo, save_checkpoint
    from anogen.detection.registry import build_detector
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig

    root = tmp_path_factory.mktemp("runs")
    train(TrainConfig(data_dir=category, detector="draem", out_dir=root / "draem", steps=4, validate_every=2,
                      overrides=dict(TINY_DRAEM), device="cpu"))
    torch.manual_seed(1)
    destseg = build_detector("destseg", preset="quick", overrides=TINY_DESTSEG).eval()
    info = CheckpointInfo(kind="destseg", preset="quick", config=destseg.config.to_dict(), image_size=32,
                          calibration=ScoreCalibration(threshold=0.31, score_min=0.12, score_max=0.77,
                                                       pixel_threshold=0.4),
                          step=1, total_steps=1)
    save_checkpoint(root / "destseg" / "best", destseg, info)
    return {"draem": root / "draem", "destseg": root / "destseg"}


@pytest.fixture(scope="module")
def images(category) -> list[Path]:
    """Test images of the category plus one of another size (maps come back at each image's size)."""
    from anogen.data.imageio import read_image, write_image

    files = sorted((category / "test").rglob("*.png"))[:5]
    odd = category.parent / "odd.png"
    write_image(odd, read_image(files[0])[:40, :30])
    return [*files, odd]


def _scores(folder: Path) -> dict[str, tuple[float, float, int]]:
    with open(folder / "scores.csv", newline="", encoding="utf-8") as handle:
        return {Path(row["image"]).name: (float(row["score"]), float(row["normalised_score"]),
                                          int(row["is_anomalous"])) for row in csv.DictReader(handle)}


@pytest.mark.parametrize("kind", ["draem", "destseg"])
def test_openvino_export_carries_calibration_and_matches_torch(kind, detectors, tmp_path, capsys):
    run = detectors[kind]
    out = tmp_path / "ov"
    assert main(["export", "--detector-dir", str(run), "--format", "openvino", "--out", str(out)]) == 0
    assert "OpenVINO matches torch within" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER_NAME, OPENVINO_XML, "model.bin"])

    exported = load_exported(out, threads=1)
    info = read_checkpoint_info(run / "best")
    assert exported.runtime == "openvino" and exported.kind == kind and exported.image_size == 32
    assert exported.calibration == info.calibration
    # The ONNX export carries the same metadata.
    assert main(["export", "--detector-dir", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    assert load_exported(tmp_path / "model.onnx", threads=1).calibration == info.calibration

    # Re-exporting into its own output needs no --overwrite; a folder anogen did not write does.
    assert main(["export", "--detector-dir", str(run), "--format", "openvino", "--out", str(out)]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", "--detector-dir", str(run), "--format", "openvino", "--out", str(foreign)]) == 2
    one_line_error(capsys, "--overwrite")
    assert (foreign / "notes.txt").read_text() == "mine"
    # Never the training run itself, not even with --overwrite.
    assert main(["export", "--detector-dir", str(run), "--format", "openvino", "--out", str(run),
                 "--overwrite"]) == 2
    one_line_error(capsys, "best")
    assert (run / "best" / "model.safetensors").is_file()


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", ["draem", "destseg"])
def test_openvino_reads_the_graph_of_either_onnx_exporter(kind, exporter, detectors, tmp_path, monkeypatch):
    """OpenVINO converts the ONNX bytes of each exporter (opset 18 or 17) and reproduces torch."""
    from anogen.detection.export import EXPORT_TOLERANCE, export_openvino

    monkeypatch.setenv(EXPORTER_ENV, exporter)
    result = export_openvino(detectors[kind], tmp_path / "ov")
    assert result.exporter == exporter and (tmp_path / "ov" / OPENVINO_XML).is_file()
    assert max(result.max_abs_diff_map, result.max_abs_diff_score) <= EXPORT_TOLERANCE
    exported = load_exported(tmp_path / "ov", threads=1)
    images = np.random.default_rng(4).random((3, 3, 32, 32)).astype(np.float32)  # another batch size
    anomaly_map, score = exported.run(images)
    assert anomaly_map.shape == (3, 1, 32, 32) and score.shape == (3,)


@pytest.mark.parametrize("kind", ["draem", "destseg"])
def test_every_runtime_gives_the_same_maps_and_scores(kind, detectors, images, tmp_path):
    from anogen.data.imageio import read_image

    run = detectors[kind]
    pictures = [read_image(p) for p in images]
    results = {}
    for runtime in RUNTIMES:  # the training run; onnx and openvino export on the fly
        with inference_model(runtime, detector_dir=run, threads=1) as model:
            results[runtime] = predict(model, pictures, batch_size=4)
    with inference_model("torch", detector_dir=run) as model:
        assert model.detector.training is False
    reference = results["torch"]
    threshold = read_checkpoint_info(run / "best").calibration.threshold
    for runtime, predictions in results.items():
        for ours, theirs, picture in zip(predictions, reference, pictures):
            assert ours.anomaly_map.shape == picture.shape[:2]
            assert np.abs(ours.anomaly_map - theirs.anomaly_map).max() <= RUNTIME_TOLERANCE, runtime
            assert abs(ours.score - theirs.score) <= RUNTIME_TOLERANCE, runtime
            # Only a score within the tolerance of the threshold may flip its decision.
            assert ours.is_anomalous == theirs.is_anomalous or abs(theirs.score - threshold) <= RUNTIME_TOLERANCE


@pytest.mark.parametrize("kind", ["draem", "destseg"])
def test_predict_cli_with_each_runtime_and_exported_models(kind, detectors, images, tmp_path, capsys):
    run = detectors[kind]
    image_args = [str(p) for p in images]
    assert main(["export", "--detector-dir", str(run), "--format", "openvino", "--out", str(tmp_path / "ov")]) == 0
    assert main(["export", "--detector-dir", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    runs = {runtime: ["--detector-dir", str(run), "--runtime", runtime] for runtime in RUNTIMES}
    runs["onnx-file"] = ["--model", str(tmp_path / "model.onnx")]  # runtime from the file's format
    runs["openvino-folder"] = ["--model", str(tmp_path / "ov"), "--runtime", "openvino"]
    scores = {}
    for name, how in runs.items():
        out = tmp_path / f"pred-{name}"
        assert main(["predict", *how, *image_args, "--out", str(out), "--quiet"]) == 0, name
        scores[name] = _scores(out)
        assert len(list(out.glob("*_heatmap.png"))) == len(images)
    assert "(openvino)" in capsys.readouterr().out
    reference = scores["torch"]
    calibration = read_checkpoint_info(run / "best").calibration
    # The normalised score divides by the validation score range (degenerate after 4 steps
    # of DRAEM), and a score at the threshold may flip: the tolerance says by how much.
    span = max(calibration.score_max - calibration.score_min, 1e-12)
    for name, table in scores.items():
        assert table.keys() == reference.keys()
        for image, (score, normalised, flag) in table.items():
            torch_score, torch_normalised, torch_flag = reference[image]
            assert score == pytest.approx(torch_score, abs=RUNTIME_TOLERANCE), (name, image)
            assert abs(normalised - torch_normalised) <= min(1.0, RUNTIME_TOLERANCE / span) + 1e-4, (name, image)
            assert flag == torch_flag or abs(torch_score - calibration.threshold) <= RUNTIME_TOLERANCE, (name, image)


def test_missing_or_damaged_exported_model_is_one_line(detectors, images, tmp_path, capsys):
    run = detectors["draem"]
    image = str(images[0])
    assert main(["export", "--detector-dir", str(run), "--format", "openvino", "--out", str(tmp_path / "ov")]) == 0
    assert main(["export", "--detector-dir", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    capsys.readouterr()

    def refused(*how: str, names: tuple[str, ...] = ()) -> str:
        out = tmp_path / "pred"
        assert main(["predict", *how, image, "--out", str(out), "--quiet"]) == 2, how
        assert not out.exists()
        return one_line_error(capsys, *names)

    refused("--model", str(tmp_path / "missing.onnx"), names=("missing.onnx", "not found"))
    refused("--model", str(tmp_path / "missing-ov"), "--runtime", "openvino", names=("missing-ov", "not found"))
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07 not a protobuf " * 40)
    refused("--model", str(tmp_path / "garbage.onnx"), names=("garbage.onnx", "not a readable ONNX model"))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((tmp_path / "model.onnx").read_bytes()[:5000])
    refused("--model", str(truncated), names=("truncated.onnx",))

    broken = tmp_path / "ov-no-bin"
    shutil.copytree(tmp_path / "ov", broken)
    (broken / "model.bin").unlink()
    refused("--model", str(broken), names=("ov-no-bin", "OpenVINO"))
    cut = tmp_path / "ov-cut-bin"
    shutil.copytree(tmp_path / "ov", cut)
    data = (cut / "model.bin").read_bytes()
    (cut / "model.bin").write_bytes(data[:len(data) // 2])
    refused("--model", str(cut), names=("ov-cut-bin",))
    bad_xml = tmp_path / "ov-bad-xml"
    shutil.copytree(tmp_path / "ov", bad_xml)
    (bad_xml / OPENVINO_XML).write_text("<net name='x'><layers>")
    refused("--model", str(bad_xml), names=("ov-bad-xml", "not a readable OpenVINO model"))

    # A model not exported by anogen has no calibration: refused, not scored with a guess.
    import onnx

    plain = onnx.load(str(tmp_path / "model.onnx"))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    refused("--model", str(tmp_path / "plain.onnx"), names=("plain.onnx", "anogen export"))

    # Wrong combinations of options.
    refused("--model", str(tmp_path / "model.onnx"), "--runtime", "torch", names=("--detector-dir",))
    refused("--model", str(tmp_path / "model.onnx"), "--detector-dir", str(run), names=("one of the two",))
    refused("--model", str(tmp_path / "weights.bin"), names=("--runtime",))
    assert main(["predict", image, "--out", str(tmp_path / "pred")]) == 2
    one_line_error(capsys, "--detector-dir", "--model")


def test_openvino_is_imported_without_telemetry(tmp_path):
    """openvino's import sends usage telemetry unless opted out; anogen's import never does."""
    code = ("from anogen.detection.runtimes import import_openvino\n"
            "import_openvino()\n"
            "import openvino.tools.ovc.telemetry_utils as t\n"
            "assert t.tm.__name__.endswith('telemetry_stub'), t.tm\n")
    env = {**os.environ, "HOME": str(tmp_path), "USERPROFILE": str(tmp_path)}
    env.pop("CI", None)  # openvino_telemetry stays quiet in CI anyway; test the user's case
    result = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "intel").exists()  # where openvino_telemetry keeps its client id and counters
