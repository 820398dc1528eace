"""DRAEM as a :class:`~anogen.detection.base.Detector`."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from anogen.detection.base import Detector, TrainBatch, TrainingPhase
from anogen.detection.draem.config import DraemConfig
from anogen.detection.draem.loss import draem_loss
from anogen.detection.draem.network import DiscriminativeNetwork, ReconstructiveNetwork, init_draem_weights

PHASE = "joint"


class DraemDetector(Detector):
    """Reconstruct, then segment where the image and its reconstruction disagree.

    Inputs are RGB in [0, 1] with no ImageNet normalisation (the networks are trained
    from scratch on that range; normalising is a known way to break a port).
    """

    kind: ClassVar[str] = "draem"
    config: DraemConfig

    def __init__(self, config: DraemConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else DraemConfig()
        self.reconstructive = ReconstructiveNetwork(3, 3, self.config.recon_base_width)
        self.discriminative = DiscriminativeNetwork(6, 2, self.config.disc_base_width)
        self.apply(init_draem_weights)

    def segment(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction (B,3,H,W) and the 2-class softmax (B,2,H,W)."""
        reconstruction = self.reconstructive(image)
        # Channel order (reconstruction, image) as in the reference.
        logits = self.discriminative(torch.cat((reconstruction, image), dim=1))
        return reconstruction, torch.softmax(logits.float(), dim=1)  # fp32 under bf16 autocast: no 0 or 1

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _, probabilities = self.segment(image)
        return probabilities[:, 1:2]

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Max of the map averaged over a 21x21 window: one bright pixel is not a defect."""
        size = self.config.score_pool_size
        pooled = F.avg_pool2d(anomaly_map, size, stride=1, padding=size // 2)
        return pooled.flatten(1).amax(dim=1)

    def training_phases(self, total_steps: int) -> list[TrainingPhase]:
        """One phase: Adam over both networks, lr x gamma at the configured fractions."""
        optimizer = torch.optim.Adam([
            {"params": self.reconstructive.parameters(), "lr": self.config.learning_rate},
            {"params": self.discriminative.parameters(), "lr": self.config.learning_rate},
        ])
        milestones = sorted({max(1, round(total_steps * m)) for m in self.config.lr_milestones})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=self.config.lr_gamma)
        return [TrainingPhase(name=PHASE, steps=total_steps, optimizer=optimizer, scheduler=scheduler)]

    def training_loss(self, batch: TrainBatch, phase: str, *, tau: float,
                      weak_all: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        if phase != PHASE:
            raise ValueError(f"DRAEM has a single training phase '{PHASE}', got '{phase}'")
        reconstruction, probabilities = self.segment(batch.image)
        return draem_loss(reconstruction, batch.clean, probabilities, batch.mask, batch.weak, tau=tau,
                          weak_all=weak_all, focal_gamma=self.config.focal_gamma)
