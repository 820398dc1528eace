"""DeSTSeg hyperparameters and the ``paper`` / ``quick`` presets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from anogen.detection.config import DetectorConfig, require_int
from anogen.errors import InputError

ROTATION_CHOICES = ("auto", "none", "slight", "full")

DESTSEG_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # The teacher stays a real ResNet18 (it must match pretrained weights); the student
    # and the head are half as wide, at 128 px. Single-thread CPU time per step of batch 8:
    # ~0.85 s (student phase), ~1.6 s (head phase); on 2 idle cores the run takes ~4 min.
    "quick": {"image_size": 128, "batch_size": 8, "steps": 400, "student_steps": 150,
              "allow_random_teacher": True, "student_embedding_size": 32,
              "student_hidden_sizes": (32, 64, 128, 256), "seg_width": 128},
}


@dataclass
class DestsegConfig(DetectorConfig):
    """Everything that defines a DeSTSeg detector and its training schedule.

    ``paper`` holds the reference values: 256 px, batch 32, 5000 SGD steps of which the
    first 1000 train the denoising student (lr 0.4) and the rest the segmentation head
    (residual blocks lr 0.1, ASPP head lr 0.01), focal gamma 4, image score = mean of the
    top 100 pixels. ``quick`` shrinks the student, the head and the resolution.
    """

    image_size: int = 256
    batch_size: int = 32
    steps: int = 5000
    student_steps: int = 1000  # the first steps of ``steps`` train the student only
    lr_student: float = 0.4
    lr_res: float = 0.1  # segmentation head, residual blocks
    lr_head: float = 0.01  # segmentation head, ASPP and output convolutions
    momentum: float = 0.9
    weight_decay: float = 1e-4
    focal_gamma: float = 4.0
    top_k: int = 100  # image score = mean of the top_k pixels of the map
    # Where the pretrained ResNet18 teacher comes from: a transformers folder, a cached
    # hub id, or a torchvision/timm state dict file. None: try microsoft/resnet-18 in the
    # local Hugging Face cache.
    teacher_weights: str | None = None
    # Without pretrained weights: refuse (paper) or warn and use a random teacher (quick).
    allow_random_teacher: bool = False
    # The teacher's stem width, and widths/depths of the stages it uses (ResNet18's 1-3).
    teacher_embedding_size: int = 64
    teacher_hidden_sizes: tuple[int, ...] = (64, 128, 256)
    teacher_depths: tuple[int, ...] = (2, 2, 2)
    # The student's ResNet encoder (all four stages); its decoder outputs the teacher's widths.
    student_embedding_size: int = 64
    student_hidden_sizes: tuple[int, ...] = (64, 128, 256, 512)
    student_depths: tuple[int, ...] = (2, 2, 2, 2)
    seg_width: int = 256  # channels of the segmentation head
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    # Training-sample rotation (see destseg/data.py): "auto" picks the reference's choice
    # for an MVTec AD category (none for any other), or "none", "slight", "full".
    rotation: str = "auto"

    kind: ClassVar[str] = "destseg"
    display_name: ClassVar[str] = "DeSTSeg"
    presets: ClassVar[dict[str, dict[str, Any]]] = DESTSEG_PRESETS

    def __post_init__(self) -> None:
        for name in ("teacher_hidden_sizes", "teacher_depths", "student_hidden_sizes", "student_depths",
                     "aspp_rates"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise InputError(f"destseg {name} must be a list of positive integers, got {value!r}")
            setattr(self, name, tuple(value))
            for item in getattr(self, name):
                if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
                    raise InputError(f"destseg {name} must be a list of positive integers, got {value!r}")
        for name in ("image_size", "batch_size", "steps", "top_k", "teacher_embedding_size",
                     "student_embedding_size", "seg_width"):
            require_int(self, name, minimum=1)
        require_int(self, "student_steps", minimum=0)
        if self.student_steps > self.steps:
            raise InputError(f"destseg student_steps ({self.student_steps}) exceeds steps ({self.steps})")
        if self.image_size % 32:
            raise InputError(f"DeSTSeg image_size must be a multiple of 32, got {self.image_size}")
        if len(self.teacher_hidden_sizes) != 3 or len(self.teacher_depths) != 3:
            raise InputError("destseg teacher_hidden_sizes and teacher_depths describe the 3 teacher stages used")
        if len(self.student_hidden_sizes) != 4 or len(self.student_depths) != 4:
            raise InputError("destseg student_hidden_sizes and student_depths describe 4 ResNet stages")
        for name in ("lr_student", "lr_res", "lr_head", "momentum", "weight_decay", "focal_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"destseg {name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.allow_random_teacher, bool):
            raise InputError(f"destseg allow_random_teacher must be true or false, got {self.allow_random_teacher!r}")
        if self.rotation not in ROTATION_CHOICES:
            raise InputError(f"destseg rotation must be one of {', '.join(ROTATION_CHOICES)}, got {self.rotation!r}")
        if self.teacher_weights is not None and not isinstance(self.teacher_weights, str):
            # A Path from a caller: the annotation says what it becomes, not what may arrive.
            self.teacher_weights = str(self.teacher_weights)  # type: ignore[unreachable]
        if self.teacher_weights == "":
            self.teacher_weights = None

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of the three compared feature levels (64, 128, 256 for ResNet18)."""
        return self.teacher_hidden_sizes

    def total_steps(self, num_train_images: int) -> int:
        """Optimiser steps of a full run (DeSTSeg counts steps, not epochs)."""
        return self.steps
