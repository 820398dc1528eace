"""The demo over several seeds: does training on generated defects beat the baseline?

Runs ``anogen demo`` once per seed (a finished run is reused, so a stopped sweep
continues where it stopped), then compares the detector trained with generated
defects against the synthesis-only baseline, seed by seed (the seed fixes the data,
the support images and the detector's initialisation, so the two are paired):

* mean of each metric, per arm;
* the mean paired difference with a 95 % bootstrap confidence interval (seeds
  resampled with replacement);
* in how many seeds "+ generated" wins.

    python benchmarks/demo_seeds.py --seeds 0 1 2 3 4 --quick --out build/demo-seeds
    python benchmarks/demo_seeds.py --seeds 0 1 2 3 4 --quick --out build/demo-seeds --summary-only
    python benchmarks/demo_seeds.py --seeds 0 4 --plan detector_steps=320,categories=washer --out build/w2x

Writes ``summary.json`` and ``summary.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")
ARMS = ("baseline", "with_generated")


def run_seed(out: Path, seed: int, quick: bool, threads: int | None, model: str | None, plan: str = "") -> None:
    if (out / "metrics.json").is_file():
        return  # finished earlier
    if plan:
        run_seed_with_plan(out, seed, quick, threads, model, plan)
        return
    argv = [sys.executable, "-m", "anogen", "demo", "--seed", str(seed), "--out", str(out)]
    argv += ["--quick"] if quick else []
    argv += ["--threads", str(threads)] if threads else []
    argv += ["--model", model] if model else []
    if out.exists():
        argv.append("--overwrite")  # our own unfinished run
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def run_seed_with_plan(out: Path, seed: int, quick: bool, threads: int | None, model: str | None,
                       plan: str) -> None:
    """The demo in this process, its plan (quick or full) with the fields of ``plan`` changed
    (``detector_steps=320,categories=washer``): the CLI has no such option, on purpose."""
    from ablate_demo import plan_with

    from anogen.demo_pipeline import DemoConfig, run_demo

    config = DemoConfig(out=out, quick=quick, model=model, seed=seed, threads=threads)
    config.plan = plan_with(plan, config.resolved_plan())
    if out.exists():
        shutil.rmtree(out)  # our own unfinished run (no metrics.json)
    print(f"+ demo seed {seed}, plan changed: {plan}", flush=True)
    print(run_demo(config).table(), flush=True)


def bootstrap_ci(differences: np.ndarray, rounds: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``differences`` (resampling them)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(rounds, len(differences)))
    means = differences[picks].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per category and metric: the arms' means, the paired difference and its CI, wins."""
    summary: dict[str, Any] = {"seeds": sorted(runs), "categories": {}}
    categories = sorted({c for metrics in runs.values() for c in metrics["categories"]})
    for category in categories:
        rows = {}
        for metric in METRICS:
            values = {arm: np.array([runs[s]["categories"][category][arm][metric] for s in sorted(runs)], float)
                      for arm in ARMS}
            difference = values["with_generated"] - values["baseline"]
            low, high = bootstrap_ci(difference)
            rows[metric] = {"baseline": values["baseline"].tolist(),
                            "with_generated": values["with_generated"].tolist(),
                            "mean_baseline": float(values["baseline"].mean()),
                            "mean_with_generated": float(values["with_generated"].mean()),
                            "mean_difference": float(difference.mean()), "ci95": [low, high],
                            "wins": int((difference > 0).sum())}
        summary["categories"][category] = rows
        summary["seconds"] = [runs[s]["seconds"] for s in sorted(runs)]
    return summary


def markdown(summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    lines = [f"Seeds {', '.join(map(str, seeds))}; demo time per run {min(summary['seconds']) / 60:.1f}"
             f"-{max(summary['seconds']) / 60:.1f} min.", ""]
    for category, rows in summary["categories"].items():
        lines += [f"**{category}**", "",
                  "| metric | baseline (mean) | + generated (mean) | paired difference [95 % CI] | wins |",
                  "|---|---|---|---|---|"]
        for metric, row in rows.items():
            low, high = row["ci95"]
            lines.append(f"| {metric} | {row['mean_baseline']:.3f} | {row['mean_with_generated']:.3f} | "
                         f"{row['mean_difference']:+.3f} [{low:+.3f}, {high:+.3f}] | {row['wins']} of {len(seeds)} |")
        lines += ["", "| seed | baseline (image AUROC, pixel AUROC, pixel AP, AUPRO) | + generated |", "|---|---|---|"]
        for index, seed in enumerate(seeds):
            cells = [", ".join(f"{rows[m][arm][index]:.3f}" for m in METRICS) for arm in ARMS]
            lines.append(f"| {seed} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default=None, help="a diffusion model other than the embedded demo model")
    parser.add_argument("--plan", default="", help="plan fields changed: detector_steps=320,categories=washer")
    parser.add_argument("--summary-only", action="store_true", help="summarise the finished runs; run nothing")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for seed in args.seeds:
        folder = args.out / f"seed-{seed}"
        if not args.summary_only:
            run_seed(folder, seed, args.quick, args.threads, args.model, args.plan)
        if (folder / "metrics.json").is_file():
            runs[seed] = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    if not runs:
        print("no finished runs to summarise", file=sys.stderr)
        return 1
    summary = summarise(runs)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (args.out / "summary.md").write_text(markdown(summary), encoding="utf-8")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
