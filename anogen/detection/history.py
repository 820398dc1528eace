"""The training history a detector run keeps beside its checkpoints (``history.jsonl``).

One JSON object per line: ``{"step", "phase", "loss", ...}`` for logged training steps
and ``{"step", "phase": "validation", <metrics>}`` for each validation. Training
rewrites it (atomically) at every checkpoint; resuming reads it back up to the
checkpoint's step; the app draws the loss and validation curves from it, so they are
there again when a project is reopened. Qt- and torch-free.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anogen.atomic import atomic_write_text

HISTORY_NAME = "history.jsonl"
VALIDATION_PHASE = "validation"
# The validation metrics drawn as curves (live during training and from the file after).
CURVE_METRICS: tuple[str, ...] = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_aupro")


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(out_dir / HISTORY_NAME, "".join(json.dumps(h) + "\n" for h in history))


def read_history(out_dir: Path, upto_step: int | None = None) -> list[dict[str, Any]]:
    """The entries of ``out_dir``'s history (up to ``upto_step``); [] when there is none.
    ValueError names the file when a line is not a JSON object."""
    path = out_dir / HISTORY_NAME
    if not path.is_file():
        return []
    history = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not JSON ({error.msg})") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        if upto_step is None or int(entry.get("step", 0)) <= upto_step:
            history.append(entry)
    return history


@dataclass
class Curve:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: object, value: object) -> None:
        if isinstance(value, (int, float)) and math.isfinite(value) and isinstance(step, (int, float)):
            self.steps.append(int(step))
            self.values.append(float(value))


@dataclass
class TrainingCurves:
    """The training loss and the validation metrics of :data:`CURVE_METRICS` over steps."""

    loss: Curve = field(default_factory=Curve)
    validation: dict[str, Curve] = field(default_factory=dict)


def training_curves(history: list[dict[str, Any]]) -> TrainingCurves:
    curves = TrainingCurves()
    for entry in history:
        if entry.get("phase") == VALIDATION_PHASE:
            for name in CURVE_METRICS:
                if name in entry:
                    curves.validation.setdefault(name, Curve()).add(entry.get("step"), entry[name])
        elif "loss" in entry:
            curves.loss.add(entry.get("step"), entry["loss"])
    return curves
