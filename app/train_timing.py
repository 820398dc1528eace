"""How long a detector training will take, said before it starts.

Two sources: a table of seconds per step measured on a 2-core laptop-class CPU (DESIGN.md,
"Measured on a 2-core CPU machine"), scaled by image size and batch; and a measurement on
this machine: :func:`time_training_steps` runs the real training for a few steps in a
scratch folder and stops it. Qt-free: the Train panel runs the measurement as a job.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from anogen.detection.train_config import TrainConfig
from anogen.jobs import JobCancelled, Progress

# Seconds per optimiser step on 2 idle CPU cores, fp32, at the preset's own image size and
# batch (DESIGN.md, and the comments of the detectors' quick presets). GPU runs are far faster.
CPU_SECONDS_PER_STEP: dict[tuple[str, str], float] = {
    ("draem", "quick"): 0.45,
    ("destseg", "quick"): 0.6,
    ("draem", "paper"): 30.0,
    ("destseg", "paper"): 20.0,
}
PRESET_SIZE = {"quick": 128, "paper": 256}
PRESET_STEPS = {("draem", "quick"): 250, ("destseg", "quick"): 400}
CPU_BUDGET_S = 5 * 60
BUDGET_SHARE = 0.8  # of the budget for the steps; the rest reads images and runs the Test
MIN_BUDGET_STEPS = 30


@dataclass
class StepTiming:
    seconds_per_step: float
    total_steps: int  # of a full run with the chosen settings
    measured: bool  # True: timed here; False: from the table

    @property
    def total_seconds(self) -> float:
        return self.seconds_per_step * self.total_steps


def table_seconds_per_step(detector: str, preset: str, image_size: int = 0) -> float | None:
    """The table's CPU seconds per step, scaled to ``image_size`` (pixels go with its square)."""
    base = CPU_SECONDS_PER_STEP.get((detector, preset))
    if base is None:
        return None
    size = image_size or PRESET_SIZE.get(preset, 128)
    return base * (size / PRESET_SIZE.get(preset, 128)) ** 2


def steps_within(seconds_per_step: float, budget_s: float = CPU_BUDGET_S) -> int:
    """The most steps whose training, with reading and testing around it, fits ``budget_s``."""
    if seconds_per_step <= 0:
        return MIN_BUDGET_STEPS
    return max(MIN_BUDGET_STEPS, int(budget_s * BUDGET_SHARE / seconds_per_step))


def describe_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def time_training_steps(train: Callable[[TrainConfig, Callable, threading.Event], Any],
                        config: TrainConfig, progress: Callable[[Progress], None],
                        cancel: threading.Event, steps: int = 3) -> StepTiming:
    """Run ``train(config, ...)`` until ``steps`` optimiser steps are done, then stop it.

    The first step is warm-up (allocations, caches) and not counted: the time is the mean
    of the next ones. ``total_steps`` is what the run reports as its length. Nothing is
    kept: the run writes into a scratch folder that is removed.
    """
    stop = threading.Event()
    marks: list[tuple[float, int]] = []
    total = {"steps": 0}

    def watch(report: Progress) -> None:
        if cancel.is_set():
            stop.set()
        if report.total and report.step > 0 and (not marks or report.step > marks[-1][1]):
            marks.append((time.monotonic(), report.step))
            total["steps"] = report.total
            progress(Progress(min(len(marks), steps), steps, "timing training steps"))
            if len(marks) > steps:
                stop.set()

    with tempfile.TemporaryDirectory(prefix="anogen-timing-") as scratch:
        try:
            train(replace(config, out_dir=Path(scratch) / "run", overwrite=True), watch, stop)
        except JobCancelled:
            pass
    if cancel.is_set():
        raise JobCancelled("timing cancelled")
    if len(marks) < 2:
        raise RuntimeError("training ended before its steps could be timed")
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    per_step = (t1 - t0) / max(1, s1 - s0)
    return StepTiming(per_step if math.isfinite(per_step) else 0.0, total["steps"], True)
