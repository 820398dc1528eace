"""The settings of a detector training run (:func:`anogen.detection.train.train`): one
place for their defaults and ranges.

This module imports neither torch nor OpenCV, so ``anogen train`` builds its parser and
the app its Train panel from the defaults and ranges here, and the app hands the job a
typed :class:`TrainConfig` (a misspelt field fails in the window, not in the background
job). The detector's own settings (widths, image size, steps of a preset) are its config
class's, :mod:`anogen.detection.config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anogen.compute import CPU_PRECISION_CHOICES
from anogen.detection.options import PROTOCOLS, SYNTHESIS_METHODS
from anogen.detection.registry import check_preset, detector_kind
from anogen.errors import InputError
from anogen.ranges import SEED_RANGE, FieldRange


@dataclass
class TrainConfig:
    """What to train, on what, and where to put it.

    ``overrides`` change fields of the detector config of ``preset`` (for example
    ``{"image_size": 64}``); ``steps`` overrides the preset's length. ``exclude`` lists
    support images (the few real defects used for stage 1): they never enter the
    validation split, and the checkpoint records them (by content) so ``evaluate`` leaves
    them out too. ``protocol`` ``holdout`` keeps the checkpoint that validates best;
    ``paper`` keeps the last one, as the reference code did (validation then only draws
    the curves and calibrates the threshold).
    """

    data_dir: Path
    detector: str
    out_dir: Path
    generated_dirs: Sequence[Path] = ()  # generated sets, e.g. one per defect kind of the category
    generated_dir: Path | None = None  # one more set (for callers that pass a single one)
    preset: str = "quick"
    overrides: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    tau: float = 0.9
    mix: float = 0.5
    weak_all: bool = False  # apply the tau filter to every sample, as the reference code did
    seed: int = 0
    device: str = "auto"
    validate_every: int | None = None  # None: about ten validations per run
    val_fraction: float = 0.3  # share of each test kind (or of train/good) held out
    max_val_images: int = 64
    teacher_weights: Path | None = None  # DeSTSeg: ResNet18 weights (folder or file)
    textures_dir: Path | None = None  # texture images for synthesis (e.g. DTD); default: built-in
    synthesis: str = "perlin"  # the detector's own anomalies: "perlin" (official) or "cutpaste" (Table 4)
    exclude: Sequence[Path] = ()
    resume: bool = False
    overwrite: bool = False
    log_every: int = 1
    protocol: str = "holdout"
    # bf16 autocast of the training forward pass on the CPU (anogen.compute): "auto" only
    # where the CPU has native bf16; validation and scoring always run in fp32.
    cpu_precision: str = "auto"

    @property
    def generated_sets(self) -> list[Path]:
        """Every generated set to train on: ``generated_dirs`` and then ``generated_dir``."""
        return [Path(p) for p in self.generated_dirs] + ([Path(self.generated_dir)] if self.generated_dir else [])

    def validate(self) -> None:
        detector_kind(self.detector)
        check_preset(self.preset)
        if not 0.0 < self.tau <= 1.0:
            raise InputError(f"tau must be in (0, 1], got {self.tau}")
        if self.mix not in TRAIN_RANGES["mix"]:
            raise InputError(f"mix must be in [0, 1], got {self.mix}")
        if self.mix == 0.0 and not self.generated_sets:
            raise InputError("mix 0 trains on generated samples only; give a generated set")
        if self.protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol '{self.protocol}'; choose one of {', '.join(PROTOCOLS)}")
        if self.cpu_precision not in CPU_PRECISION_CHOICES:
            raise InputError(f"unknown CPU precision '{self.cpu_precision}'; choose one of "
                             f"{', '.join(CPU_PRECISION_CHOICES)}")
        if self.synthesis not in SYNTHESIS_METHODS:
            raise InputError(f"unknown synthesis '{self.synthesis}'; choose one of {', '.join(SYNTHESIS_METHODS)}")
        if self.steps is not None and self.steps < TRAIN_RANGES["steps"].minimum:
            raise InputError(f"steps must be at least {TRAIN_RANGES['steps'].minimum}, got {self.steps}")
        if self.validate_every is not None and self.validate_every < 1:
            raise InputError(f"validate_every must be at least 1, got {self.validate_every}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.resume and self.overwrite:
            raise InputError("choose either resume or overwrite, not both")


#: What the app offers (see :mod:`anogen.ranges`). Its Steps field also shows 0, one below
#: the minimum, as "preset default" (``steps=None``). tau starts above 0, which validate()
#: refuses (every box pixel would lose its loss).
TRAIN_RANGES: dict[str, FieldRange[Any]] = {
    "steps": FieldRange(1, 1_000_000),
    "tau": FieldRange(0.01, 1.0),
    "mix": FieldRange(0.0, 1.0),
    "seed": SEED_RANGE,
}
