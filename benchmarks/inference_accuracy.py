"""int8 accuracy of trained detectors: ``python benchmarks/bench_inference.py --accuracy RUN_DIR``.

``RUN_DIR`` is a detector's training run (``anogen train --out``) or any folder holding
some (a demo report: ``detectors/<category>/baseline`` and ``.../generated``; an
``anogen run`` output). For each training run found:

1. the checkpoint ``anogen evaluate`` would score (the run's protocol: ``best`` for
   holdout, ``last`` for paper) is exported to ONNX and to OpenVINO, the way
   ``anogen export`` does (each export checked against torch as it is written);
2. both exports are quantized to int8 exactly as the timing benchmark does
   (:func:`bench_inference.quantize_onnx`, :func:`bench_inference.quantize_openvino`,
   the latter only with ``nncf`` installed), calibrated on the category's *training*
   good images (``train/good``, never a test image);
3. the category's test set is scored in torch, ONNX Runtime, OpenVINO and both int8
   models by :func:`anogen.detection.evaluate.score_test_set`, the scoring core of
   ``anogen evaluate``: the same images, the same support and validation exclusions
   (recorded in the checkpoint), the same metrics (:mod:`anogen.metrics`).

The category is ``--data`` if given, else the ``data_dir`` its training run recorded.
Reported: image AUROC, pixel AUROC, pixel AP and AUPRO per runtime, and each int8
model's change against the same runtime in fp32. Writes JSON (default
``benchmarks/results/inference_accuracy.json``) and, with ``--docs``, the table between
the ``bench_inference accuracy`` markers of that Markdown file.

    taskset -c 1 python benchmarks/bench_inference.py --accuracy build/demo-seeds/seed-0 --threads 2
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ACCURACY_METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")
METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP",
                 "pixel_aupro": "AUPRO"}
#: Each int8 model and the fp32 model of the same runtime it is compared with.
INT8_OF = {"onnx_int8": "onnx", "openvino_int8": "openvino"}
ACCURACY_JSON = Path("benchmarks/results/inference_accuracy.json")
ACCURACY_DOCS_BEGIN = "<!-- bench_inference accuracy: begin -->"
ACCURACY_DOCS_END = "<!-- bench_inference accuracy: end -->"


@dataclass(frozen=True)
class Target:
    """One training run to score, and the category it is scored on."""

    label: str  # its path under RUN_DIR ("." for RUN_DIR itself)
    run: Path
    data: Path


def is_training_run(folder: Path) -> bool:
    return any((folder / which / "detector.json").is_file() for which in ("best", "last"))


def find_training_runs(root: Path) -> list[Path]:
    """``root`` if it is a training run, else every training run under it, sorted."""
    root = Path(root)
    if is_training_run(root):
        return [root]
    runs = {path.parent.parent for path in root.rglob("detector.json") if is_training_run(path.parent.parent)}
    return sorted(runs)


def metric_deltas(metrics: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """Each int8 model's metrics minus those of its runtime in fp32 (None where either is missing)."""
    def minus(after: float | None, before: float | None) -> float | None:
        return None if after is None or before is None else float(after) - float(before)

    return {int8: {key: minus(metrics[int8].get(key), metrics[fp32].get(key)) for key in ACCURACY_METRICS}
            for int8, fp32 in INT8_OF.items() if int8 in metrics and fp32 in metrics}


def _cell(value: float | None, delta: float | None = None, with_delta: bool = False) -> str:
    text = "n/a" if value is None else f"{value:.4f}"
    if with_delta:
        text += " (n/a)" if delta is None else f" ({delta:+.4f})"
    return text


def accuracy_markdown(result: Mapping) -> str:
    """The table: one row per training run and runtime; int8 rows give their change
    against the same runtime's fp32 in brackets."""
    env = result["environment"]
    lines = [f"Measured {result['date']} on {env['cpu']}, {env['threads']} thread(s); torch {env['torch']}, "
             f"onnxruntime {env['onnxruntime']}, openvino {env['openvino']}, nncf {env['nncf'] or 'not installed'}. "
             f"int8 calibration: {result['calibration']}.",
             "",
             "| detector | runtime | " + " | ".join(METRIC_LABELS[k] for k in ACCURACY_METRICS) + " |",
             "|---|---|" + "---|" * len(ACCURACY_METRICS)]
    for target in result["targets"]:
        name = (f"{target['label']} ({target['kind']} {target['preset']}, {target['image_size']} px, "
                f"{target['checkpoint']}; {target['n_scored']} test images)")
        for runtime, metrics in target["metrics"].items():
            delta = target["int8_delta"].get(runtime, {})
            cells = [_cell(metrics.get(k), delta.get(k), runtime in INT8_OF) for k in ACCURACY_METRICS]
            lines.append(f"| {name} | {runtime} | " + " | ".join(cells) + " |")
            name = ""
    return "\n".join(lines)


def calibration_batches(data_dir: Path, size: int, count: int | None):
    """The category's training good images at the detector's input size, each a float32
    NCHW batch of one, at most ``count`` (all when None); never a test image."""
    from anogen.data.datasets import read_mvtec_category
    from anogen.data.imageio import read_image
    from anogen.detection.preprocess import resize_image

    records = read_mvtec_category(data_dir).train_good[:count]
    return [resize_image(read_image(r.path), size).transpose(2, 0, 1)[None].copy() for r in records]


def find_targets(root: Path, data: Path | None) -> list[Target]:
    from anogen.detection.checkpoint import read_checkpoint_info
    from anogen.errors import InputError

    runs = find_training_runs(root)
    if not runs:
        raise InputError(f"{root}: no detector training run here (a folder with best/ or last/detector.json)")
    targets = []
    for run in runs:
        which = "best" if (run / "best" / "detector.json").is_file() else "last"
        category = data or Path(str(read_checkpoint_info(run, which).provenance.get("data_dir", "")))
        if not (category / "train" / "good").is_dir():
            raise InputError(f"{run}: its category {category} is not there; name it with --data CAT_DIR")
        label = run.relative_to(root).as_posix() if run != root else run.name
        targets.append(Target(label=label, run=run, data=category))
    return targets


def score_target(target: Target, threads: int, calibration_count: int | None, with_nncf: bool) -> dict:
    """Export, quantize and score one training run in every runtime (see the module docstring)."""
    from bench_inference import quantize_onnx, quantize_openvino

    from anogen.detection.checkpoint import load_detector
    from anogen.detection.evaluate import resolve_protocol, score_test_set
    from anogen.detection.export import export_loaded_onnx, export_loaded_openvino
    from anogen.detection.runtimes import load_onnx, load_openvino

    protocol, which = resolve_protocol(target.run)
    loaded = load_detector(target.run, which=which, device="cpu")
    calibration = calibration_batches(target.data, loaded.image_size, calibration_count)
    row: dict = {"label": target.label, "detector_dir": str(target.run), "data_dir": str(target.data),
                 "kind": loaded.info.kind, "preset": loaded.info.preset, "image_size": loaded.image_size,
                 "protocol": protocol, "checkpoint": which, "calibration_images": len(calibration),
                 "metrics": {}, "seconds": {}}
    with tempfile.TemporaryDirectory(prefix="anogen-int8-") as scratch:
        tmp = Path(scratch)
        started = time.perf_counter()
        export_loaded_onnx(loaded, tmp / "model.onnx")
        export_loaded_openvino(loaded, tmp / "openvino")
        quantize_onnx(tmp / "model.onnx", tmp / "model_int8.onnx", calibration)
        models = {"torch": None, "onnx": load_onnx(tmp / "model.onnx", threads=threads),
                  "onnx_int8": load_onnx(tmp / "model_int8.onnx", threads=threads),
                  "openvino": load_openvino(tmp / "openvino", threads=threads)}
        if with_nncf:
            quantize_openvino(tmp / "openvino", tmp / "openvino_int8", calibration)
            models["openvino_int8"] = load_openvino(tmp / "openvino_int8", threads=threads)
        row["seconds"]["export_and_quantize"] = round(time.perf_counter() - started, 1)
        for runtime in ("torch", "onnx", "openvino", "onnx_int8", "openvino_int8"):
            if runtime not in models:
                continue
            started = time.perf_counter()
            scored = score_test_set(target.data, target.run, protocol=protocol, which=which, device="cpu",
                                    model=models[runtime])
            report = scored.metrics.to_json()
            row["metrics"][runtime] = {key: report.get(key) for key in ACCURACY_METRICS}
            row["seconds"][runtime] = round(time.perf_counter() - started, 2)
            row.update(n_scored=report["n_scored"], n_defective=report["n_defective"],
                       n_excluded=report["n_excluded"])
            print(f"  {target.label} {runtime}: " + ", ".join(
                f"{METRIC_LABELS[k]} {_cell(v)}" for k, v in row["metrics"][runtime].items()), flush=True)
    row["int8_delta"] = metric_deltas(row["metrics"])
    return row


def run_accuracy(root: Path, data: Path | None, threads: int, calibration_count: int | None,
                 nncf_version: str | None, environment: dict) -> dict:
    targets = find_targets(root, data)
    rows = [score_target(target, threads, calibration_count, nncf_version is not None) for target in targets]
    counts = sorted({row["calibration_images"] for row in rows})
    return {"date": time.strftime("%Y-%m-%d"), "run_dir": os.fspath(root),
            "calibration": f"{'/'.join(map(str, counts))} training good image(s) of the category (train/good), "
                           "no test image",
            "environment": environment, "targets": rows}
