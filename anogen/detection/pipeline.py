"""How a detector's official training code turns images into training samples.

DRAEM and DeSTSeg share the Perlin-noise synthesis but not what surrounds it, and the
differences matter for a faithful reproduction:

* DRAEM leaves half of its synthetic draws clean, passes every texture through three
  of its ten augmentations, and rotates 30 % of its samples by U(-90, 90) degrees with a
  black border (the AnoGen fork does the same to generated samples, whose clean draws
  are again half).
* DeSTSeg makes every synthetic draw anomalous, blends the texture as it is, and rotates
  by category: none for aligned objects, U(-5, 5) degrees for some, a random multiple of
  90 degrees plus U(-5, 5) for rotation-invariant ones, with a grey (114) border.

Each detector folder states its own :class:`DataPipeline` (``draem/data.py``,
``destseg/data.py``) and the registry hands it to the trainer, so the shared training
code never asks which detector it is feeding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from anogen.errors import InputError


@dataclass(frozen=True)
class Rotation:
    """A random rotation of a training sample, applied before any anomaly is made.

    With ``probability`` the sample is rotated: first by a random multiple of 90 degrees
    when ``right_angles``, then by U(-``max_degrees``, ``max_degrees``). Pixels rotated in
    from outside the image take the value ``fill`` (in [0, 1]); masks get 0 there.
    """

    probability: float = 0.0
    max_degrees: float = 0.0
    right_angles: bool = False
    fill: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise InputError(f"rotation probability must be in [0, 1], got {self.probability}")
        if not 0.0 <= self.max_degrees <= 180.0:
            raise InputError(f"rotation max_degrees must be in [0, 180], got {self.max_degrees}")
        if not 0.0 <= self.fill <= 1.0:
            raise InputError(f"rotation fill must be in [0, 1], got {self.fill}")

    @property
    def active(self) -> bool:
        return self.probability > 0.0 and (self.right_angles or self.max_degrees > 0.0)

    def draw(self, rng: np.random.Generator) -> tuple[int, float]:
        """``(quarter_turns, degrees)`` for one sample; ``(0, 0.0)`` leaves it as it is."""
        if not self.active or rng.random() >= self.probability:
            return 0, 0.0
        quarters = int(rng.integers(4)) if self.right_angles else 0
        degrees = float(rng.uniform(-self.max_degrees, self.max_degrees)) if self.max_degrees > 0 else 0.0
        return quarters, degrees

    def apply(self, rng: np.random.Generator, images: tuple[np.ndarray, ...],
              masks: tuple[np.ndarray, ...] = ()) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """Rotate ``images`` (float (H, W, 3)) and ``masks`` (float (H, W)) all by the same draw."""
        quarters, degrees = self.draw(rng)
        if quarters == 0 and degrees == 0.0:
            return images, masks
        return (tuple(_rotate(i, quarters, degrees, self.fill, cv2.INTER_LINEAR) for i in images),
                tuple(_rotate(m, quarters, degrees, 0.0, cv2.INTER_NEAREST) for m in masks))


def _rotate(array: np.ndarray, quarters: int, degrees: float, fill: float, interpolation: int) -> np.ndarray:
    # Right angles are exact (no resampling); the rest turns about the pixel-grid centre.
    if quarters:
        array = np.rot90(array, quarters)
    if degrees:
        height, width = array.shape[:2]
        matrix = cv2.getRotationMatrix2D((width / 2.0 - 0.5, height / 2.0 - 0.5), degrees, 1.0)
        border = (fill,) * (array.shape[2] if array.ndim == 3 else 1)
        array = cv2.warpAffine(np.ascontiguousarray(array), matrix, (width, height), flags=interpolation,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    return np.ascontiguousarray(array, dtype=np.float32)


@dataclass(frozen=True)
class DataPipeline:
    """A detector's training-sample recipe (see the module docstring).

    ``synthesis_clean_probability``: share of synthesis draws returned without an anomaly.
    ``texture_augmentations``: how many of DRAEM's ten augmentations each texture gets.
    ``generated_clean_probability``: share of generated draws replaced by their clean
    source image (an all-normal sample).
    ``rotation``: applied to every sample, synthetic or generated, before anything else.
    """

    synthesis_clean_probability: float
    texture_augmentations: int
    generated_clean_probability: float
    rotation: Rotation = field(default_factory=Rotation)

    def __post_init__(self) -> None:
        for name in ("synthesis_clean_probability", "generated_clean_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value}")
        if self.texture_augmentations < 0:
            raise InputError(f"texture_augmentations must be >= 0, got {self.texture_augmentations}")
