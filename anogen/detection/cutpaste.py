"""CutPaste synthetic anomalies: a patch of the image itself, jittered and pasted elsewhere.

CutPaste (Li et al., CVPR 2021), the ``normal`` variant: a rectangle covering 2-15 % of
the image, with an aspect ratio drawn log-uniformly from (0.3, 1/0.3), is cut out at a
random place, its colours jittered (brightness, contrast, saturation, hue, each by up
to 10 %), and pasted at another random place. The anomaly mask is the pasted
rectangle. The AnoGen paper trains with it in place of DRAEM's Perlin synthesis as an
ablation (Table 4, "CutPaste + generated"), which is what ``--synthesis cutpaste`` runs.

The synthesizer has the same ``sample(image, rng) -> SynthesisResult`` contract as
:class:`~anogen.detection.synthesis.AnomalySynthesizer`, including the share of samples
returned clean, so the trainer can use either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from anogen.detection.synthesis import SynthesisResult
from anogen.errors import InputError


@dataclass
class CutPasteConfig:
    """CutPaste's published ranges; ``clean_probability`` comes from the detector's recipe."""

    area_ratio: tuple[float, float] = (0.02, 0.15)
    aspect_ratio: float = 0.3  # width/height drawn log-uniformly from (r, 1/r)
    jitter: float = 0.1
    clean_probability: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.area_ratio
        if not 0.0 < low <= high < 1.0:
            raise InputError(f"cutpaste area_ratio must satisfy 0 < low <= high < 1, got {self.area_ratio}")
        if not 0.0 < self.aspect_ratio <= 1.0:
            raise InputError(f"cutpaste aspect_ratio must be in (0, 1], got {self.aspect_ratio}")
        if not 0.0 <= self.jitter < 1.0:
            raise InputError(f"cutpaste jitter must be in [0, 1), got {self.jitter}")
        if not 0.0 <= self.clean_probability <= 1.0:
            raise InputError(f"clean_probability must be in [0, 1], got {self.clean_probability}")


class CutPasteSynthesizer:
    """Makes CutPaste anomalies on float32 (H, W, 3) images in [0, 1]."""

    def __init__(self, config: CutPasteConfig | None = None, seed: int = 0) -> None:
        self.config = config or CutPasteConfig()
        self._rng = np.random.default_rng(seed)

    def patch_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """``(patch_height, patch_width)`` for one draw, inside the image."""
        area = rng.uniform(*self.config.area_ratio) * height * width
        log_ratio = math.log(self.config.aspect_ratio)
        aspect = math.exp(rng.uniform(log_ratio, -log_ratio))
        patch_w = int(round(math.sqrt(area * aspect)))
        patch_h = int(round(math.sqrt(area / aspect)))
        return max(1, min(patch_h, height - 1)), max(1, min(patch_w, width - 1))

    def jitter(self, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """torchvision-style ColorJitter with every factor in [1 - j, 1 + j] (hue: +-j/2 turn)."""
        j = self.config.jitter
        if j == 0.0:
            return patch
        patch = patch * np.float32(rng.uniform(1 - j, 1 + j))
        mean = patch.mean()
        patch = (patch - mean) * np.float32(rng.uniform(1 - j, 1 + j)) + mean
        grey = patch @ np.array([0.299, 0.587, 0.114], np.float32)
        patch = (patch - grey[..., None]) * np.float32(rng.uniform(1 - j, 1 + j)) + grey[..., None]
        hsv = cv2.cvtColor(np.clip(patch, 0, 1).astype(np.float32), cv2.COLOR_RGB2HSV)  # hue in degrees
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-j / 2, j / 2) * 360.0) % 360.0
        return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)

    def sample(self, image: np.ndarray, rng: np.random.Generator | None = None) -> SynthesisResult:
        """A (possibly clean) CutPaste anomaly; pixels outside the pasted rectangle are untouched."""
        rng = self._rng if rng is None else rng
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or not np.issubdtype(image.dtype, np.floating):
            raise InputError(f"expected a float (H, W, 3) image in [0, 1], got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        out = image.astype(np.float32, copy=True)
        mask = np.zeros((height, width), np.float32)
        if rng.random() < self.config.clean_probability:
            return SynthesisResult(out, mask, False)
        patch_h, patch_w = self.patch_size(height, width, rng)
        src_y, src_x = int(rng.integers(0, height - patch_h + 1)), int(rng.integers(0, width - patch_w + 1))
        dst_y, dst_x = int(rng.integers(0, height - patch_h + 1)), int(rng.integers(0, width - patch_w + 1))
        patch = self.jitter(out[src_y:src_y + patch_h, src_x:src_x + patch_w].copy(), rng)
        out[dst_y:dst_y + patch_h, dst_x:dst_x + patch_w] = patch
        mask[dst_y:dst_y + patch_h, dst_x:dst_x + patch_w] = 1.0
        return SynthesisResult(out, mask, True)
