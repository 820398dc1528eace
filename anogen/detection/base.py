"""What every detector provides to the shared training loop, inference and export.

A detector is a ``torch.nn.Module`` whose ``forward`` maps images to an anomaly
probability map; everything model-specific about training (losses, optimisers, phases)
stays in the detector's own folder (``draem/``, ``destseg/``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from anogen.detection.config import DetectorConfig


@dataclass
class TrainBatch:
    """One training batch. All tensors are on the detector's device.

    ``image``  (B,3,H,W) float in [0,1]: the network input, possibly with an anomaly.
    ``clean``  (B,3,H,W) float in [0,1]: the same view without the anomaly: DRAEM's
               reconstruction target, DeSTSeg's teacher input. For a generated sample it
               is the good image the sample was generated from.
    ``mask``   (B,1,H,W) float {0,1}: a pixel mask for synthetic anomalies, a box mask for
               generated ones, all zeros for clean samples.
    ``weak``   (B,) bool: True where ``mask`` is a box label, so the tau filter applies.
    """

    image: torch.Tensor
    clean: torch.Tensor
    mask: torch.Tensor
    weak: torch.Tensor


@dataclass
class TrainingPhase:
    """A stretch of training with its own optimiser (DeSTSeg trains student, then head)."""

    name: str
    steps: int
    optimizer: torch.optim.Optimizer
    scheduler: Any = None  # a torch LR scheduler stepped once per training step, or None


class Detector(nn.Module, abc.ABC):
    """Base class of DRAEM and DeSTSeg."""

    kind: ClassVar[str]  # "draem" or "destseg"
    config: DetectorConfig  # set by each subclass's __init__

    @abc.abstractmethod
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> anomaly probability map (B,1,H,W) at the input size."""

    @abc.abstractmethod
    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) anomaly map -> (B,) image anomaly score."""

    @abc.abstractmethod
    def training_phases(self, total_steps: int) -> list[TrainingPhase]:
        """The optimisers and schedules for ``total_steps`` steps, in order."""

    @abc.abstractmethod
    def training_loss(self, batch: TrainBatch, phase: str, *, tau: float,
                      weak_all: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss for one step of ``phase`` and its named components (for logging).

        Segmentation losses are multiplied by :func:`anogen.detection.weak.keep_mask`
        for weak samples (or for all samples when ``weak_all``); reconstruction and
        distillation losses are never masked.
        """

    def batch_reduction(self, phase: str) -> Literal["mean", "sum"]:
        """How :meth:`training_loss` of ``phase`` combines a batch's samples: ``"mean"``
        (the mean of per-sample terms of equal size) or ``"sum"``. Data-parallel training
        (:mod:`anogen.detection.parallel`) weights each process's share of the batch by it."""
        return "mean"

    def predict(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps and image scores, without gradients."""
        with torch.no_grad():
            anomaly_map = self(image)
            return anomaly_map, self.image_score(anomaly_map)
