"""DRAEM hyperparameters and the ``paper`` / ``quick`` presets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from anogen.detection.config import DetectorConfig, require_int
from anogen.errors import InputError

DRAEM_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # 8x / 4x narrower networks (~1.1 M + ~1.8 M parameters) at 128 px. One step of batch
    # 8 costs ~60 GFLOP, ~1.9 s of single-thread CPU time (about 1 s on 2 idle cores), so
    # 250 steps take about 4 minutes.
    "quick": {"image_size": 128, "batch_size": 8, "steps": 250, "recon_base_width": 16,
              "disc_base_width": 16},
}


@dataclass
class DraemConfig(DetectorConfig):
    """Everything that defines a DRAEM detector and its training schedule.

    ``paper`` holds the reference values (widths 128..1024 and 64..512, 256 px, batch
    16, 700 epochs, Adam 1e-4 with lr x0.1 at 4/7 and 6/7 of training). ``quick``
    narrows the networks and the resolution so a CPU run takes minutes.
    """

    image_size: int = 256
    batch_size: int = 16
    epochs: int = 700
    # When set, the run length in optimiser steps, and ``epochs`` is ignored.
    steps: int | None = None
    recon_base_width: int = 128  # reconstructive encoder widths w, 2w, 4w, 8w
    disc_base_width: int = 64  # discriminative U-Net widths w .. 8w
    learning_rate: float = 1e-4
    # Fractions of the run at which the learning rate is multiplied by ``lr_gamma``
    # (epochs 400 and 600 of 700 in the paper).
    lr_milestones: tuple[float, ...] = (4 / 7, 6 / 7)
    lr_gamma: float = 0.1
    focal_gamma: float = 2.0
    # Image score = max of the anomaly map averaged over this square window.
    score_pool_size: int = 21
    # Share of training samples rotated by U(-90, 90) degrees (see draem/data.py).
    rotate_probability: float = 0.3

    kind: ClassVar[str] = "draem"
    display_name: ClassVar[str] = "DRAEM"
    presets: ClassVar[dict[str, dict[str, Any]]] = DRAEM_PRESETS

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(float(m) for m in self.lr_milestones)
        for name in ("image_size", "batch_size", "epochs", "recon_base_width", "disc_base_width",
                     "score_pool_size"):
            require_int(self, name)
        if self.steps is not None:
            require_int(self, "steps")
        if self.image_size % 32:
            # The U-Net pools five times; its skips only line up on multiples of 32.
            raise InputError(f"DRAEM image_size must be a multiple of 32, got {self.image_size}")
        if self.score_pool_size % 2 == 0:
            raise InputError(f"DRAEM score_pool_size must be odd, got {self.score_pool_size}")
        for name in ("learning_rate", "lr_gamma", "focal_gamma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"DRAEM {name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.rotate_probability, bool) or not isinstance(self.rotate_probability, (int, float)) \
                or not 0.0 <= self.rotate_probability <= 1.0:
            raise InputError(f"DRAEM rotate_probability must be in [0, 1], got {self.rotate_probability!r}")
        if any(not 0.0 < m < 1.0 for m in self.lr_milestones):
            raise InputError(f"DRAEM lr_milestones are fractions of the run in (0, 1), got {self.lr_milestones}")

    def total_steps(self, num_train_images: int) -> int:
        """Optimiser steps of a full run: ``steps`` if set, else ``epochs`` passes over the
        training images (the last batch of an epoch may be short, as in the reference)."""
        if self.steps is not None:
            return self.steps
        if num_train_images <= 0:
            raise InputError("DRAEM needs at least one training image")
        return self.epochs * math.ceil(num_train_images / self.batch_size)
