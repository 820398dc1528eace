"""Weak box supervision study on the demo dataset (issue: stage 3 evidence).

For each detector (DRAEM, DeSTSeg) and seed, trains:

* ``baseline``: the detector's own synthetic anomalies only;
* ``tau=0.9`` / ``tau=1.0`` / ``tau=0.8``: the same plus box-labelled anomalies (mix 0.5),
  with the tau-filtered box loss (tau = 1.0 is plain box supervision).

The box-labelled anomalies are NOT AnoGen generations: they are defects painted by the
demo dataset's own renderer (``anogen.data.demo.render_defect``) on good images drawn
with seeds the dataset does not use, with each pixel mask replaced by its bounding box.
Their source good images (same seed, no defect) are written next to them, as a
generated set's manifest expects.

Every run is evaluated on the category's test set, minus the validation images the run
used to pick its best checkpoint. Results go to ``OUT/results.json`` (one entry per run,
appended as runs finish, so an interrupted study keeps what it has and a rerun skips
finished runs) and a mean table to ``OUT/results.md``.

    python scripts/weak_supervision_study.py --out /tmp/study --steps 150 --seeds 0 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CONDITIONS = {"baseline": None, "tau=0.9": 0.9, "tau=1.0": 1.0, "tau=0.8": 0.8}
METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")


def write_box_labelled_set(out: Path, category: str, size: int, count_per_kind: int, seed: int) -> Path:
    """Demo-renderer defects with box masks, plus their clean source images."""
    from anogen.data.demo import DEFECT_KINDS, render_defect, render_good, sample_rng
    from anogen.data.generated import GeneratedSetWriter
    from anogen.data.imageio import write_image

    folder = out / "box_labelled"
    if (folder / "manifest.jsonl").is_file():
        return folder
    sources = out / "box_labelled_sources"
    with GeneratedSetWriter(folder) as writer:
        for kind in DEFECT_KINDS[category]:
            for index in range(count_per_kind):
                # A split name the dataset never uses, so none of these is a test image.
                good, _ = render_good(category, sample_rng(seed, category, "study", kind, index), size)
                image, mask = render_defect(category, kind, sample_rng(seed, category, "study", kind, index), size)
                ys, xs = np.nonzero(mask)
                if len(xs) == 0:
                    continue
                source = sources / f"{kind}_{index:03d}.png"
                write_image(source, good)
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                writer.add(image, box=box, source=str(source.resolve()), defect_kind=kind, seed=index,
                           model="demo-renderer (box-labelled stand-in)", embedding_hash="", steps=0,
                           guidance=0.0, id=f"{kind}_{index:03d}")
    return folder


def box_filter_share(run_dir: Path, box_set: Path) -> dict[str, float]:
    """After training: the share of box pixels the tau filter would drop, per tau.

    A box pixel is dropped when the trained model calls it normal with probability
    >= tau, i.e. p_anomaly <= 1 - tau. Reported for the final ("last") weights on the
    box-labelled images, and separately for the box pixels inside / outside the true
    defect (the demo renderer's pixel mask is known here).
    """
    from anogen.data.demo import render_defect, sample_rng
    from anogen.data.generated import read_generated_set
    from anogen.detection.checkpoint import load_detector
    from anogen.detection.infer import predict

    loaded = load_detector(run_dir, "last", device="cpu")
    samples = read_generated_set(box_set)
    predictions = predict(loaded, [s.load_image() for s in samples])
    shares: dict[str, list[float]] = {}
    for sample, prediction in zip(samples, predictions):
        box = sample.load_mask()
        kind, index = sample.defect_kind, sample.seed
        _, true_mask = render_defect("fabric", kind, sample_rng(1000, "fabric", "study", kind, index), box.shape[0])
        p = prediction.anomaly_map
        for tau in (0.9, 0.8):
            dropped = p <= 1.0 - tau
            shares.setdefault(f"box_dropped_tau{tau}", []).append(float(dropped[box].mean()))
            normal_in_box = box & ~true_mask
            if normal_in_box.any():
                shares.setdefault(f"normal_in_box_dropped_tau{tau}", []).append(float(dropped[normal_in_box].mean()))
            if true_mask.any():
                shares.setdefault(f"defect_dropped_tau{tau}", []).append(float(dropped[true_mask].mean()))
    return {key: float(np.mean(values)) for key, values in shares.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--detectors", nargs="+", default=["draem", "destseg"])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the quick preset's)")
    parser.add_argument("--image-size", type=int, default=None, help="override the preset's input size")
    parser.add_argument("--data-size", type=int, default=128, help="demo image size")
    parser.add_argument("--per-kind", type=int, default=8, help="box-labelled anomalies per defect kind")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--diagnose", action="store_true",
                        help="only report, for finished runs with box labels, the share of box pixels the "
                             "tau filter drops at the end of training")
    args = parser.parse_args()

    import torch

    from anogen.data.demo import write_demo_dataset
    from anogen.detection.evaluate import evaluate
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    if not (data / "fabric").is_dir():
        write_demo_dataset(data, categories=("fabric",), size=args.data_size, seed=0)
    category = data / "fabric"
    boxes = write_box_labelled_set(args.out, "fabric", args.data_size, args.per_kind, seed=1000)

    if args.diagnose:
        for run_dir in sorted((args.out / "runs").glob("*")):
            if "baseline" not in run_dir.name and (run_dir / "last").is_dir():
                print(run_dir.name, json.dumps({k: round(v, 4) for k, v in box_filter_share(run_dir, boxes).items()}))
        return

    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else []
    done = {(r["detector"], r["condition"], r["seed"]) for r in results}
    overrides = {"image_size": args.image_size} if args.image_size else {}
    for detector in args.detectors:
        for seed in args.seeds:
            for condition in args.conditions:
                if (detector, condition, seed) in done:
                    continue
                tau = CONDITIONS[condition]
                run_dir = args.out / "runs" / f"{detector}_{condition}_seed{seed}"
                started = time.time()
                result = train(TrainConfig(
                    data_dir=category, detector=detector, out_dir=run_dir, preset="quick", overrides=overrides,
                    steps=args.steps, generated_dir=boxes if tau is not None else None, tau=tau or 0.9,
                    seed=seed, device="cpu", overwrite=True))
                report = evaluate(category, run_dir, device="cpu").to_json()
                entry = {"detector": detector, "condition": condition, "seed": seed, "steps": result.steps,
                         "best_step": result.best_step, "train_seconds": round(time.time() - started, 1),
                         **{k: report[k] for k in METRICS}, "n_images": report["n_images"],
                         "n_excluded": report["n_excluded"]}
                results.append(entry)
                results_path.write_text(json.dumps(results, indent=1) + "\n")
                print(json.dumps(entry), flush=True)
    (args.out / "results.md").write_text(table(results))
    print(table(results))


def table(results: list[dict]) -> str:
    lines = ["| detector | condition | seeds | " + " | ".join(METRICS) + " |",
             "|---|---|---|" + "---|" * len(METRICS)]
    keys = sorted({(r["detector"], r["condition"]) for r in results},
                  key=lambda k: (k[0], list(CONDITIONS).index(k[1])))
    for detector, condition in keys:
        rows = [r for r in results if r["detector"] == detector and r["condition"] == condition]
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in rows if r[metric] is not None]
            if not values:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
        lines.append(f"| {detector} | {condition} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
