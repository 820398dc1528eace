"""Test results kept in the project, and the words that say what a number was computed on.

A Test run (heat maps, metrics, ROC/PR, pass/fail at a threshold) takes a while, and
its numbers differ from the validation score training records for the best checkpoint.
So the panel stores each detector's last Test in the project's GUI state
(``project.view["test_results"][detector]``) and shows it again on reopen, labelled;
heat maps are not stored (they are recomputed by Test).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.tasks import TestImage, TestResults

VIEW_KEY = "test_results"
MAX_CURVE_POINTS = 512  # enough to draw a curve; keeps project.json small


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def _curve(points: tuple[np.ndarray, np.ndarray] | None) -> list[list[float]] | None:
    if points is None:
        return None
    xs, ys = (np.asarray(p, dtype=float) for p in points)
    if len(xs) > MAX_CURVE_POINTS:  # evenly spaced points, the first and last kept
        keep = np.unique(np.linspace(0, len(xs) - 1, MAX_CURVE_POINTS).round().astype(int))
        xs, ys = xs[keep], ys[keep]
    return [[round(float(v), 6) for v in xs], [round(float(v), 6) for v in ys]]


def to_record(results: TestResults, relative: Callable[[Path], str], dataset: str = "") -> dict[str, Any]:
    """A JSON-safe summary of ``results``: metrics, curves, threshold and each image's score.

    ``relative`` turns an image path into the string stored (project-relative when it can).
    """
    metrics = {k: v for k, v in results.metrics.items()
               if isinstance(v, str) or _number(v) is not None or (isinstance(v, dict) and all(
                   isinstance(n, int) for n in v.values()))}
    return {
        "metrics": metrics,
        "threshold": float(results.threshold),
        "roc": _curve(results.roc),
        "pr": _curve(results.pr),
        "notes": [str(n) for n in results.notes],
        "images": [[relative(t.path), int(t.label), str(t.defect_kind), float(t.score), float(t.normalised)]
                   for t in results.images],
        "dataset": dataset,
        "tested_at": time.strftime("%Y-%m-%d %H:%M"),
    }


def from_record(record: Any, resolve: Callable[[str], Path]) -> TestResults | None:
    """The stored results again (no heat maps), or None when ``record`` is not one we wrote."""
    try:
        images = [TestImage(resolve(str(path)), int(label), str(kind), float(score), float(normalised), None)
                  for path, label, kind, score, normalised in record["images"]]
        results = TestResults(images, dict(record["metrics"]), threshold=float(record["threshold"]),
                              notes=[str(n) for n in record.get("notes", [])])
        for name in ("roc", "pr"):
            curve = record.get(name)
            if curve is not None:
                xs, ys = curve
                setattr(results, name, (np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)))
    except (KeyError, TypeError, ValueError):
        return None
    return results


def results_caption(metrics: dict[str, Any], tested_at: str = "") -> str:
    """``Test set (holdout protocol, best checkpoint): 24 images scored, 5 excluded (3 support, 2 validation)``."""
    scored = metrics.get("n_scored", metrics.get("n_images"))
    excluded = metrics.get("n_excluded")
    how = ", ".join(x for x in (f"{metrics['protocol']} protocol" if metrics.get("protocol") else "",
                                f"{metrics['checkpoint']} checkpoint" if metrics.get("checkpoint") else "") if x)
    text = "Test set" + (f" ({how})" if how else "")
    if scored is not None:
        text += f": {int(scored)} images scored"
        if excluded is not None:
            text += f", {int(excluded)} excluded"
            parts = [f"{int(metrics[k])} {label}" for k, label in (("n_excluded_support", "support"),
                                                                     ("n_excluded_validation", "validation"))
                     if _number(metrics.get(k))]
            if parts and int(excluded):
                text += f" ({', '.join(parts)})"
    if tested_at:
        text += f"; tested {tested_at}"
    return text + "."


def validation_caption(metrics: dict[str, Any]) -> str:
    """What the metrics training records are: the validation score that picked the checkpoint."""
    count = _number(metrics.get("n_scored", metrics.get("n_images")))
    size = f", {int(count)} images" if count is not None else ""
    return (f"Validation during training (best checkpoint{size}), not the test set: "
            "press Test to score the test images.")
