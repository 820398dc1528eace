"""``anogen train / evaluate / predict / export`` end to end on a tiny demo dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import TINY_DRAEM_ARGS

from anogen.cli import main
from anogen.data.demo import write_demo_dataset
from anogen.data.generated import GeneratedSetWriter
from anogen.data.imageio import list_images, read_image


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, categories=("fabric",), size=64, seed=5, train_good=4, test_good=3, test_per_kind=2)
    return root / "fabric"


def test_train_evaluate_predict_export_end_to_end(category, tmp_path, capsys):
    generated = tmp_path / "generated"
    with GeneratedSetWriter(generated) as writer:
        for index, source in enumerate(list_images(category / "train" / "good")[:2]):
            image = read_image(source).copy()
            image[20:40, 20:40] = 0
            writer.add(image, box=(18, 18, 42, 42), source=str(source), defect_kind="hole", seed=index,
                       model="hand", embedding_hash="0", steps=0, guidance=0.0)
    out = tmp_path / "detector"
    assert main(["train", "--data", str(category), "--detector", "draem", "--generated", str(generated),
                 "--tau", "0.8", "--steps", "3", "--seed", "2", "--device", "cpu", *TINY_DRAEM_ARGS,
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "3/3" in captured.err and "loss=" in captured.err  # the progress bar
    assert "trained draem for 3 steps" in captured.out
    saved = json.loads((out / "best" / "detector.json").read_text())
    assert saved["config"]["image_size"] == 32 and saved["provenance"]["tau"] == 0.8
    assert saved["provenance"]["generated_samples"] == 2 and saved["provenance"]["seed"] == 2

    support = category / "test" / "hole" / "000.png"
    assert main(["evaluate", "--data", str(category), "--detector-dir", str(out), "--exclude", str(support),
                 "--json", str(tmp_path / "metrics.json"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "pixel AUROC" in printed and "pixel AUPRO" in printed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "pixel_aupro"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0
    assert metrics["n_excluded"] >= 1 and metrics["n_images"] + metrics["n_excluded"] == 9

    images = [category / "test" / "good" / "000.png", category / "test" / "stain"]
    assert main(["predict", "--detector-dir", str(out), *map(str, images), "--out", str(tmp_path / "pred"),
                 "--device", "cpu", "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "pred" / "scores.csv").open()))
    assert len(rows) == 3
    for row in rows:
        overlay = read_image(tmp_path / "pred" / row["heatmap"])
        assert overlay.shape == (64, 64, 3)  # at the input image's size
        assert 0.0 <= float(row["normalised_score"]) <= 1.0 and row["is_anomalous"] in ("0", "1")

    assert main(["export", "--detector-dir", str(out), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    anomaly_map, score = session.run(None, {"image": np.zeros((2, 3, 32, 32), np.float32)})
    assert anomaly_map.shape == (2, 1, 32, 32) and score.shape == (2,)


def test_user_mistakes_exit_2_with_one_line(category, tmp_path, capsys):
    empty = tmp_path / "empty_set"
    GeneratedSetWriter(empty).commit()
    cases = [
        (["train", "--data", str(category), "--detector", "draem", "--generated", str(empty), "--out",
          str(tmp_path / "a")], "no usable samples"),
        (["train", "--data", str(category), "--detector", "draem", "--set", "widht=3", "--out",
          str(tmp_path / "b")], "unknown draem option"),
        (["evaluate", "--data", str(category), "--detector-dir", str(tmp_path / "missing")], "not found"),
        (["predict", "--detector-dir", str(tmp_path / "missing"), str(tmp_path / "x.png"), "--out",
          str(tmp_path / "c")], "not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("anogen: error:") and message in err
    assert not any((tmp_path / name).exists() for name in "abc")
