"""Detector speed: inference latency per 256 px image (torch and ONNX) and DRAEM training steps.

For each detector and preset, a randomly initialised detector of that preset's
architecture (DeSTSeg's teacher too: no weights are needed to time it) scores one
256 x 256 RGB image:

* ``torch``: :func:`anogen.detection.infer.predict` end to end (resize to the preset's
  input size, forward, image score, map resized back to 256 px);
* ``onnx``: the exported graph in onnxruntime (CPU provider) on the resized input.

Then the DRAEM training step (forward, L2 + SSIM + focal loss, backward, Adam) is timed
at each preset's batch size and resolution.

Median of ``--repeats`` runs after one warm-up. Prints a Markdown table and, with
``--json``, writes the numbers.

    python benchmarks/bench_detectors.py --repeats 5 --threads 2 --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from _timing import median_seconds


def build(kind: str, preset: str, overrides: dict | None = None):
    from anogen.detection.registry import build_detector

    return build_detector(kind, preset=preset, overrides=overrides, for_loading=True)


def bench_inference(kind: str, preset: str, repeats: int, onnx: bool) -> dict:
    import numpy as np

    from anogen.detection.checkpoint import CheckpointInfo, ScoreCalibration, load_detector, save_checkpoint
    from anogen.detection.export import export_loaded_onnx
    from anogen.detection.infer import predict
    from anogen.detection.training_data import resize_image

    detector = build(kind, preset).eval()
    size = detector.config.image_size
    params = sum(p.numel() for p in detector.parameters())
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        info = CheckpointInfo(kind=kind, preset=preset, config=detector.config.to_dict(), image_size=size,
                              calibration=ScoreCalibration(0.5, 0.0, 1.0), step=0, total_steps=0)
        save_checkpoint(Path(tmp) / "ckpt", detector, info)
        loaded = load_detector(Path(tmp) / "ckpt", device="cpu")
        row = {"detector": kind, "preset": preset, "input_size": size, "params_m": round(params / 1e6, 2),
               "torch_ms": 1000 * median_seconds(lambda: predict(loaded, [image]), repeats)}
        if onnx:
            import onnxruntime

            path = Path(tmp) / "model.onnx"
            export_loaded_onnx(loaded, path)
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            resized = resize_image(image, size).transpose(2, 0, 1)[None].copy()
            row["onnx_ms"] = 1000 * median_seconds(lambda: session.run(None, {"image": resized}), repeats)
    return row


def training_step(kind: str, preset: str, overrides: dict | None = None):
    """One training step of a freshly built detector on a random batch: ``(step_fn, config)``."""
    import torch

    from anogen.detection.base import TrainBatch

    detector = build(kind, preset, overrides).train()
    cfg = detector.config
    phase = detector.training_phases(1000)[0]
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=generator)
    mask = (torch.rand(cfg.batch_size, 1, cfg.image_size, cfg.image_size, generator=generator) > 0.9).float()
    batch = TrainBatch(image=image, clean=image, mask=mask, weak=torch.zeros(cfg.batch_size, dtype=torch.bool))

    def step() -> None:
        loss, _ = detector.training_loss(batch, phase.name, tau=0.9)
        phase.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        phase.optimizer.step()

    return step, cfg


def bench_draem_step(preset: str, repeats: int, batch_size: int | None) -> dict:
    step, cfg = training_step("draem", preset, {"batch_size": batch_size} if batch_size else None)
    return {"preset": preset, "batch_size": cfg.batch_size, "input_size": cfg.image_size,
            "step_s": median_seconds(step, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=["draem", "destseg"])
    parser.add_argument("--presets", nargs="+", default=["quick", "paper"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step-repeats", type=int, default=3)
    parser.add_argument("--paper-step-batch", type=int, default=None,
                        help="batch size for the paper DRAEM step (default: the preset's 16)")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}")
    inference = [bench_inference(kind, preset, args.repeats, not args.no_onnx)
                 for kind in args.detectors for preset in args.presets]
    print("\n| detector | preset | input | params (M) | torch ms / 256 px image | ONNX ms |")
    print("|---|---|---|---|---|---|")
    for row in inference:
        onnx = f"{row['onnx_ms']:.0f}" if "onnx_ms" in row else "-"
        print(f"| {row['detector']} | {row['preset']} | {row['input_size']} | {row['params_m']} | "
              f"{row['torch_ms']:.0f} | {onnx} |")
    steps = []
    if not args.no_train and "draem" in args.detectors:
        steps = [bench_draem_step(preset, args.step_repeats,
                                  args.paper_step_batch if preset == "paper" else None)
                 for preset in args.presets]
        print("\n| DRAEM training step | batch | input | seconds |")
        print("|---|---|---|---|")
        for row in steps:
            print(f"| {row['preset']} | {row['batch_size']} | {row['input_size']} | {row['step_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "load_average": load,
                                         "inference": inference, "draem_step": steps}, indent=1) + "\n")


if __name__ == "__main__":
    main()
