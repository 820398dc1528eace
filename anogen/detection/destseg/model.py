"""DeSTSeg as a :class:`~anogen.detection.base.Detector`."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from anogen.detection.base import Detector, TrainBatch, TrainingPhase
from anogen.detection.destseg.config import DestsegConfig
from anogen.detection.destseg.loss import head_loss, student_loss
from anogen.detection.destseg.network import SegmentationNet, StudentNet
from anogen.detection.destseg.teacher import ResNetFeatures, random_resnet, resolve_teacher
from anogen.detection.losses import l2_normalize

STUDENT_PHASE = "student"
HEAD_PHASE = "head"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DestsegDetector(Detector):
    """Frozen teacher, denoising student, and a segmentation head on their disagreement.

    Input images are RGB in [0, 1]; the ImageNet normalisation the teacher expects is
    part of the module (and so of an exported ONNX graph).
    """

    kind: ClassVar[str] = "destseg"
    config: DestsegConfig
    pixel_mean: torch.Tensor  # buffers (register_buffer in __init__)
    pixel_std: torch.Tensor

    def __init__(self, config: DestsegConfig | None = None, *, for_loading: bool = False,
                 preset: str = "") -> None:
        """``for_loading``: build a random teacher of the right shape because a checkpoint's
        state dict (which includes the teacher) is loaded next; no weights are looked up."""
        super().__init__()
        self.config = config if config is not None else DestsegConfig()
        cfg = self.config
        if for_loading:
            resnet, pretrained = random_resnet(cfg.teacher_embedding_size, cfg.teacher_hidden_sizes,
                                               cfg.teacher_depths), False
            self.teacher_source = "checkpoint"
        else:
            source = resolve_teacher(cfg.teacher_weights, allow_random=cfg.allow_random_teacher,
                                     embedding_size=cfg.teacher_embedding_size,
                                     hidden_sizes=cfg.teacher_hidden_sizes, depths=cfg.teacher_depths,
                                     preset_hint=f" (preset '{preset}')" if preset else "")
            resnet, pretrained = source.resnet, source.pretrained
            self.teacher_source = source.description
        self.teacher = ResNetFeatures(resnet, num_stages=3)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.student = StudentNet(cfg.student_embedding_size, cfg.student_hidden_sizes, cfg.student_depths,
                                  cfg.feature_channels)
        self.segmentation = SegmentationNet(sum(cfg.feature_channels), cfg.seg_width, cfg.aspp_rates)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # Saved with the weights, so a loaded checkpoint still knows what its teacher was.
        self.register_buffer("teacher_pretrained_flag", torch.tensor(pretrained))

    @property
    def teacher_pretrained(self) -> bool:
        """True when the teacher holds ImageNet weights, False for a random teacher."""
        return bool(self.teacher_pretrained_flag)

    def train(self, mode: bool = True) -> DestsegDetector:
        super().train(mode)
        self.teacher.eval()  # the teacher's BatchNorm statistics never change
        return self

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.pixel_mean) / self.pixel_std

    def head_probability(self, teacher_features: list[torch.Tensor],
                         student_features: list[torch.Tensor]) -> torch.Tensor:
        """Anomaly probability (B,1,H/4,W/4) from the head, given both feature pyramids."""
        level1 = student_features[0].shape[2:]
        # The product of unit vectors, summed over channels, is the cosine similarity; its
        # sign is flipped as in the reference. Each level is resized to the 1/4 level.
        disagreement = torch.cat([
            F.interpolate(-l2_normalize(t) * l2_normalize(s), size=level1, mode="bilinear", align_corners=False)
            for t, s in zip(teacher_features, student_features)
        ], dim=1)
        return torch.sigmoid(self.segmentation(disagreement).float())  # fp32 under bf16 autocast

    def segmentation_probability(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised image -> anomaly probability (B,1,H/4,W/4)."""
        with torch.no_grad():
            teacher_features = self.teacher(pixels)
        return self.head_probability(teacher_features, self.student(pixels))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        probability = self.segmentation_probability(self.normalise(image))
        return F.interpolate(probability, size=image.shape[2:], mode="bilinear", align_corners=False)

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Mean of the ``top_k`` (100) highest pixels of each map."""
        flat = anomaly_map.flatten(1)
        k = min(self.config.top_k, flat.shape[1])
        return flat.topk(k, dim=1).values.mean(dim=1)

    def student_steps(self, total_steps: int) -> int:
        """Steps of the student phase in a run of ``total_steps`` (the configured share)."""
        cfg = self.config
        student = round(total_steps * cfg.student_steps / cfg.steps)
        if cfg.student_steps > 0 and total_steps >= 2:
            student = min(max(student, 1), total_steps - 1)  # both phases get at least one step
        return max(0, min(student, total_steps))

    def training_phases(self, total_steps: int) -> list[TrainingPhase]:
        """Student phase (SGD lr 0.4 on the student), then head phase (SGD lr 0.1 on the
        head's residual blocks, 0.01 on its ASPP part); the student is frozen in the head
        phase, as in the reference."""
        cfg = self.config
        student = self.student_steps(total_steps)
        phases = []
        if student > 0:
            optimizer = torch.optim.SGD(self.student.parameters(), lr=cfg.lr_student, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
            phases.append(TrainingPhase(name=STUDENT_PHASE, steps=student, optimizer=optimizer))
        if total_steps - student > 0:
            optimizer = torch.optim.SGD([
                {"params": self.segmentation.res.parameters(), "lr": cfg.lr_res},
                {"params": self.segmentation.head.parameters(), "lr": cfg.lr_head},
            ], lr=cfg.lr_res, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            phases.append(TrainingPhase(name=HEAD_PHASE, steps=total_steps - student, optimizer=optimizer))
        return phases

    def batch_reduction(self, phase: str) -> Literal["mean", "sum"]:
        """The student's cosine loss sums over the batch (as the reference); the head's averages."""
        return "sum" if phase == STUDENT_PHASE else "mean"

    def training_loss(self, batch: TrainBatch, phase: str, *, tau: float,
                      weak_all: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        if phase == STUDENT_PHASE:
            self.student.train()
            self.segmentation.eval()
            with torch.no_grad():
                clean_features = self.teacher(self.normalise(batch.clean))
            return student_loss(self.student(self.normalise(batch.image)), clean_features)
        if phase == HEAD_PHASE:
            self.student.eval()
            self.segmentation.train()
            pixels = self.normalise(batch.image)
            with torch.no_grad():
                teacher_features = self.teacher(pixels)
                student_features = self.student(pixels)
            probability = self.head_probability(teacher_features, student_features)
            return head_loss(probability, batch.mask, batch.weak, tau=tau, weak_all=weak_all,
                             focal_gamma=self.config.focal_gamma)
        raise ValueError(f"DeSTSeg phases are '{STUDENT_PHASE}' and '{HEAD_PHASE}', got '{phase}'")
