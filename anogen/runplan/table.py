"""The results table of a run, shaped like the paper's Table 1.

One row per category and a mean row; for each metric (image AUROC, pixel AUROC, pixel
AP, AUPRO) the baseline detector (its own synthetic anomalies) and the detector trained
with the generated defects side by side. Written as ``OUT/results.md`` and
``OUT/results.json`` once every evaluation is done, by whichever process (or shard)
finishes last. The table holds only metrics, no times or hosts, so it is the same
whichever way the work was split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from anogen.atomic import atomic_write_json, atomic_write_text
from anogen.runplan.plan import Plan
from anogen.runplan.steps import VARIANTS, Step

TABLE_METRICS = (
    ("image_auroc", "image AUROC"),
    ("pixel_auroc", "pixel AUROC"),
    ("pixel_ap", "pixel AP"),
    ("pixel_aupro", "AUPRO"),
)
VARIANT_LABELS = {"baseline": "baseline", "generated": "+ generated"}
RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def collect_results(plan: Plan, steps: list[Step]) -> dict[str, Any] | None:
    """The table as JSON, or None while an evaluation is missing."""
    evaluations = {(s.category, s.name): s for s in steps if s.stage == "evaluate"}
    if not all(step.is_done() for step in evaluations.values()):
        return None
    categories: dict[str, Any] = {}
    for category in plan.categories:
        row: dict[str, Any] = {}
        for variant in VARIANTS:
            metrics = json.loads((evaluations[(category.name, variant)].folder / "metrics.json").read_text("utf-8"))
            row[variant] = {key: _number(metrics.get(key)) for key, _ in TABLE_METRICS}
            row[variant]["n_images"] = metrics.get("n_images")
        row["kinds"] = [kind.name for kind in category.kinds]
        categories[category.name] = row
    mean = {variant: {key: _mean([categories[c][variant][key] for c in categories]) for key, _ in TABLE_METRICS}
            for variant in VARIANTS}
    return {"model": plan.model, "detector": plan.detector, "preset": plan.preset, "seed": plan.seed,
            "metrics": [key for key, _ in TABLE_METRICS], "categories": categories, "mean": mean}


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def render_markdown(results: dict[str, Any]) -> str:
    header = ["category"] + [f"{label} {VARIANT_LABELS[v]}" for _, label in TABLE_METRICS for v in VARIANTS]
    lines = [f"# Results: {results['detector']}, preset {results['preset']}, seed {results['seed']}", "",
             (f"Model: `{results['model']}`. Values in percent; 'baseline' trains on the detector's own "
              "synthetic anomalies, '+ generated' adds every defect kind's generated set."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = list(results["categories"].items()) + [("**mean**", results["mean"])]
    for name, row in rows:
        cells = [_cell(row[v][key]) for key, _ in TABLE_METRICS for v in VARIANTS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_results(plan: Plan, steps: list[Step]) -> Path | None:
    """Write ``results.md`` and ``results.json`` when every evaluation is done."""
    results = collect_results(plan, steps)
    if results is None:
        return None
    atomic_write_json(plan.out / RESULTS_JSON, results)
    atomic_write_text(plan.out / RESULTS_MD, render_markdown(results))
    return plan.out / RESULTS_MD
