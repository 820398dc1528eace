"""Inference on the CPU where the line runs it: torch vs ONNX Runtime vs OpenVINO, fp32 and int8.

For each detector and preset a randomly initialised detector of that preset's
architecture (no weights are needed to time it; DeSTSeg's teacher too) is saved as a
checkpoint, exported the way ``anogen export`` does, and one 256 x 256 RGB image is scored
end to end with :func:`anogen.detection.infer.predict` (resize to the preset's input
size, the model, the image score, the map resized back to 256 px) in each runtime:

* ``torch``       the checkpoint, fp32;
* ``onnx``        the ONNX export in onnxruntime (CPU provider), fp32;
* ``openvino``    the OpenVINO export (CPU plugin, f32 inference precision);
* ``onnx_int8``   the ONNX export quantized by onnxruntime's own static quantizer (QDQ,
                  per-channel weights), calibrated on good images of the demo dataset;
* ``openvino_int8`` the OpenVINO export quantized by NNCF (``nncf.quantize``), same
                  calibration images. Only when ``nncf`` is installed (``pip install nncf``;
                  it is not an anogen dependency); otherwise the row says ``not measured``.

int8 rows also report how far the int8 model's outputs move from the same runtime's fp32
outputs on held-out demo images (largest score change, mean map change). With random
weights that is a sanity check of the quantized graph, not an accuracy figure: the int8
accuracy change is measured on trained detectors by ``--accuracy RUN_DIR``
(:mod:`inference_accuracy`: the test set scored as ``anogen evaluate`` scores it, in each
runtime, fp32 and int8, calibrated on the category's training good images).

Median of ``--repeats`` runs after one warm-up, ``--threads`` threads for every runtime
(default: the compute policy's, every core unless ``ANOGEN_THREADS`` pins it). Writes
JSON (``--json``, default ``benchmarks/results/inference.json``) and, with ``--docs``,
replaces the table between the ``bench_inference`` markers in that Markdown file.

    python benchmarks/bench_inference.py --repeats 20 --docs docs/benchmarks.md
    python benchmarks/bench_inference.py --presets quick --repeats 2 --json /tmp/inference.json  # smoke run
    python benchmarks/bench_inference.py --accuracy build/demo-seeds/seed-0 --threads 2  # int8 accuracy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _timing import median_seconds

RUNTIME_COLUMNS = ("torch", "onnx", "openvino", "onnx_int8", "openvino_int8")
DOCS_BEGIN = "<!-- bench_inference: begin -->"
DOCS_END = "<!-- bench_inference: end -->"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def demo_images(size: int, count: int, seed: int):
    """``count`` good and ``count`` defective RGB images of the demo dataset at ``size`` px."""
    from anogen.data.demo import write_demo_dataset
    from anogen.data.imageio import read_image

    with tempfile.TemporaryDirectory() as tmp:
        write_demo_dataset(Path(tmp), categories=("fabric",), size=size, seed=seed, train_good=count,
                           test_good=0, test_per_kind=max(1, count // 2))
        category = Path(tmp) / "fabric"
        good = [read_image(p) for p in sorted((category / "train" / "good").glob("*.png"))]
        defective = [read_image(p) for p in sorted((category / "test").rglob("*.png"))]
    return good, defective


def quantize_onnx(source: Path, target: Path, calibration) -> None:
    """onnxruntime's static int8 quantization (QDQ, per-channel weights, u8 activations)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"image": item}

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def quantize_openvino(source: Path, target: Path, calibration) -> None:
    """NNCF post-training int8 quantization of an OpenVINO export, metadata kept."""
    from anogen.detection.export import OPENVINO_RT_INFO, OPENVINO_XML
    from anogen.detection.runtimes import import_openvino

    ov = import_openvino()  # first: keeps openvino (and nncf's use of it) off the network
    import nncf

    model = ov.Core().read_model(source / OPENVINO_XML)
    metadata = {key: model.get_rt_info([OPENVINO_RT_INFO, key]).astype(str)
                for key in ("producer", "kind", "image_size", "input_range", "calibration")}
    quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
    for key, value in metadata.items():
        quantized.set_rt_info(value, [OPENVINO_RT_INFO, key])
    target.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, target / OPENVINO_XML, compress_to_fp16=False)


def nncf_available() -> str | None:
    """NNCF's version, or None when it cannot be imported."""
    from anogen.detection.runtimes import import_openvino

    import_openvino()
    try:
        import nncf
    except ImportError:
        return None
    return nncf.__version__


def output_change(fp32, int8) -> dict:
    import numpy as np

    return {"max_abs_score_change": max(abs(a.score - b.score) for a, b in zip(fp32, int8)),
            "mean_abs_map_change": float(np.mean([np.abs(a.anomaly_map - b.anomaly_map).mean()
                                                  for a, b in zip(fp32, int8)]))}


def bench(kind: str, preset: str, repeats: int, threads: int, int8: bool, with_nncf: bool, good, defective,
          calibration_count: int) -> dict:
    import numpy as np
    import torch

    from anogen.detection.checkpoint import CheckpointInfo, ScoreCalibration, load_detector, save_checkpoint
    from anogen.detection.export import export_loaded_onnx, export_loaded_openvino
    from anogen.detection.infer import predict
    from anogen.detection.preprocess import resize_image
    from anogen.detection.registry import build_detector
    from anogen.detection.runtimes import load_onnx, load_openvino

    torch.manual_seed(0)
    detector = build_detector(kind, preset=preset, for_loading=True).eval()
    size = detector.config.image_size
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    row = {"detector": kind, "preset": preset, "input_size": size,
           "params_m": round(sum(p.numel() for p in detector.parameters()) / 1e6, 2), "ms": {}, "int8_change": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = CheckpointInfo(kind=kind, preset=preset, config=detector.config.to_dict(), image_size=size,
                              calibration=ScoreCalibration(0.5, 0.0, 1.0), step=0, total_steps=0)
        save_checkpoint(tmp / "ckpt", detector, info)
        loaded = load_detector(tmp / "ckpt", device="cpu")
        models = {"torch": loaded}
        export_loaded_onnx(loaded, tmp / "model.onnx")
        models["onnx"] = load_onnx(tmp / "model.onnx", threads=threads)
        export_loaded_openvino(loaded, tmp / "openvino")
        models["openvino"] = load_openvino(tmp / "openvino", threads=threads)
        if int8:
            calibration = [resize_image(picture, size).transpose(2, 0, 1)[None].copy()
                           for picture in good[:calibration_count]]
            quantize_onnx(tmp / "model.onnx", tmp / "model_int8.onnx", calibration)
            models["onnx_int8"] = load_onnx(tmp / "model_int8.onnx", threads=threads)
            if with_nncf:
                quantize_openvino(tmp / "openvino", tmp / "openvino_int8", calibration)
                models["openvino_int8"] = load_openvino(tmp / "openvino_int8", threads=threads)
        for name, model in models.items():
            row["ms"][name] = 1000 * median_seconds(lambda model=model: predict(model, [image]), repeats)
            print(f"  {kind} {preset} {name}: {row['ms'][name]:.1f} ms", flush=True)
        for name in ("onnx_int8", "openvino_int8"):
            if name in models:
                base = name.removesuffix("_int8")
                row["int8_change"][name] = output_change(predict(models[base], defective),
                                                         predict(models[name], defective))
    row["speedup_vs_torch"] = {name: row["ms"]["torch"] / ms for name, ms in row["ms"].items() if name != "torch"}
    return row


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"Measured {result['date']} on {env['cpu']} ({env['cores']} cores), {env['threads']} thread(s) per "
             f"runtime, load average {env['load_before']:.1f} before / {env['load_after']:.1f} after, "
             f"median of {result['repeats']} runs; torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
             f"openvino {env['openvino']}, nncf {env['nncf'] or 'not installed'}.",
             "",
             "| detector | preset | input | params (M) | " + " | ".join(f"{c} ms" for c in RUNTIME_COLUMNS)
             + " | fastest vs torch |",
             "|---|---|---|---|" + "---|" * (len(RUNTIME_COLUMNS) + 1)]
    for row in result["rows"]:
        cells = [f"{row['ms'][c]:.1f}" if c in row["ms"] else "not measured" for c in RUNTIME_COLUMNS]
        fastest = max(row["speedup_vs_torch"], key=row["speedup_vs_torch"].get)
        lines.append(f"| {row['detector']} | {row['preset']} | {row['input_size']} | {row['params_m']} | "
                     + " | ".join(cells) + f" | {fastest} {row['speedup_vs_torch'][fastest]:.2f}x |")
    changes = [(row, name, change) for row in result["rows"] for name, change in row["int8_change"].items()]
    if changes:
        lines += ["", "int8 output change vs the same runtime's fp32 (random weights, demo test images; "
                  "not an accuracy figure):", "",
                  "| detector | preset | runtime | max score change | mean map change |", "|---|---|---|---|---|"]
        lines += [f"| {row['detector']} | {row['preset']} | {name} | {change['max_abs_score_change']:.3g} | "
                  f"{change['mean_abs_map_change']:.3g} |" for row, name, change in changes]
    return "\n".join(lines)


def write_docs(path: Path, table: str, begin: str = DOCS_BEGIN, end: str = DOCS_END) -> None:
    text = path.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        sys.exit(f"{path}: no '{begin}' ... '{end}' markers to put the table between")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{table}\n{end}{tail}", encoding="utf-8")


def environment(threads: int, nncf_version: str | None) -> dict:
    import onnxruntime
    import torch

    from anogen.detection.runtimes import import_openvino

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "openvino": import_openvino().__version__, "nncf": nncf_version}


def write_outputs(result: dict, table: str, json_path: Path, docs: Path | None, begin: str, end: str) -> None:
    print("\n" + table)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {json_path}")
    if docs:
        write_docs(docs, table, begin, end)
        print(f"updated {docs}")


def main_accuracy(args: argparse.Namespace, threads: int, nncf_version: str | None) -> None:
    from inference_accuracy import (
        ACCURACY_DOCS_BEGIN,
        ACCURACY_DOCS_END,
        ACCURACY_JSON,
        accuracy_markdown,
        run_accuracy,
    )

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, {threads} thread(s), load average {load_before:.1f}; "
          f"nncf {'not installed: openvino_int8 not measured' if nncf_version is None else nncf_version}", flush=True)
    result = run_accuracy(args.accuracy, args.data, threads, args.calibration, nncf_version,
                          {**environment(threads, nncf_version), "load_before": load_before})
    result["environment"]["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    write_outputs(result, accuracy_markdown(result), args.json or ACCURACY_JSON, args.docs, ACCURACY_DOCS_BEGIN,
                  ACCURACY_DOCS_END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=["draem", "destseg"])
    parser.add_argument("--presets", nargs="+", default=["quick", "paper"])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per runtime (median; one warm-up first)")
    parser.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: the "
                        "compute policy's, every core unless ANOGEN_THREADS pins it)")
    parser.add_argument("--no-int8", action="store_true", help="fp32 only")
    parser.add_argument("--calibration", type=int, default=None,
                        help="images for int8 calibration (default: 16 demo images; with --accuracy, every training "
                             "good image of the category)")
    parser.add_argument("--accuracy", type=Path, default=None, metavar="RUN_DIR",
                        help="instead of timing: the int8 accuracy change of the trained detectors in RUN_DIR (a "
                             "training run, or a folder of them such as a demo report) on their test sets")
    parser.add_argument("--data", type=Path, default=None, metavar="CAT_DIR",
                        help="with --accuracy: the category to score on (default: the one each run recorded)")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/inference.json, with "
                        "--accuracy benchmarks/results/inference_accuracy.json")
    parser.add_argument("--docs", type=Path, default=None,
                        help="Markdown file whose bench_inference section (with --accuracy: its bench_inference "
                             "accuracy section) gets the table (e.g. docs/benchmarks.md)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.calibration is not None and args.calibration < 1:
        parser.error("--calibration must be at least 1")
    if args.accuracy is not None and args.no_int8:
        parser.error("--accuracy measures int8 models; drop --no-int8")

    from anogen.compute import apply_policy, resolve_policy

    threads = apply_policy(resolve_policy("cpu", args.threads)).threads
    nncf_version = None if args.no_int8 else nncf_available()
    if args.accuracy is not None:
        main_accuracy(args, threads, nncf_version)
        return
    calibration = args.calibration or 16
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, {threads} thread(s), load average {load_before:.1f}; "
          f"nncf {'not installed: openvino_int8 not measured' if nncf_version is None else nncf_version}", flush=True)
    good, defective = ([], []) if args.no_int8 else demo_images(256, max(calibration, 2), seed=5)
    rows = [bench(kind, preset, args.repeats, threads, not args.no_int8, nncf_version is not None, good, defective,
                  calibration)
            for kind in args.detectors for preset in args.presets]
    result = {"date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
              "environment": {**environment(threads, nncf_version), "load_before": load_before,
                              "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")},
              "rows": rows}
    write_outputs(result, markdown(result), args.json or Path("benchmarks/results/inference.json"), args.docs,
                  DOCS_BEGIN, DOCS_END)


if __name__ == "__main__":
    main()
