"""The settings of stage 1 (learn) and stage 2 (generate): one place for their defaults,
presets and ranges.

:class:`LearnConfig` is what :func:`anogen.diffusion.learn.learn_embedding` takes,
:class:`GenerateConfig` what :func:`anogen.diffusion.sampler.generate` takes. This module
imports neither torch nor diffusers, so the CLI builds its parsers and the app its spin
boxes from the defaults and ranges here before any heavy module loads, and the app hands
its jobs typed configs (a misspelt field fails in the window, not in the background job).

The dataclass defaults are the paper's. Where the app starts elsewhere on purpose, the
value is a named constant below with the reason beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from anogen.diffusion.crop import validate_crop
from anogen.diffusion.presets import apply_preset
from anogen.errors import InputError
from anogen.ranges import SEED_RANGE, FieldRange

# ============================================================================ stage 1

# Stage-1 presets (see anogen.diffusion.presets). "paper" is the reference code's setup
# (gaobb/AnoGen, txt2img-1p4B-finetune.yaml and main.py): 6100 steps of batch 4 at lr
# 0.005 scaled by the batch size (an effective 0.02), the whole image, no context crop.
# docs/fidelity.md says why the project's defaults differ.
LEARN_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"steps": 6100, "batch_size": 4, "lr": 0.005, "scale_lr": True, "crop_to_defect": "off"},
}


@dataclass
class LearnConfig:
    """Everything stage 1 needs besides the model. Defaults are the paper's."""

    images: list[Path]
    masks: list[Path]
    token: str = "<defect>"
    init_word: str = "defect"
    # What the support images show ("woven fabric"); the captions then name it, so the token
    # learns the defect, not the surface (anogen.diffusion.captions). "": the paper's captions.
    subject: str = ""
    steps: int = 6000
    batch_size: int = 4
    lr: float = 0.005
    scale_lr: bool = False  # the reference code multiplied lr by the batch size (0.02)
    weight_decay: float = 0.01  # AdamW's default, as in the reference code
    seed: int = 0
    resolution: int | None = None  # None: the model's native resolution
    crop_to_defect: str = "auto"  # auto: crop when the defect is small in its image
    context_margin: float = 1.0  # crop side = defect box side * (1 + 2 * margin)
    auto_crop_below: float = 0.5  # auto crops when that side is below this share of the image side
    area_normalised: bool = False  # divide by the mask area instead of all latent elements
    use_mask: bool = True  # False: the paper's no-mask ablation (Table 2c), loss over the whole image
    flip: bool = True  # joint random horizontal flips of image and mask
    checkpoint_every: int = 500
    checkpoint_path: Path | None = None  # None: no checkpoints
    resume_from: Path | None = None
    device: str = "auto"  # used by callers that load the model (CLI, GUI)
    precision: str = "auto"
    gradient_checkpointing: bool = False

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size if self.scale_lr else self.lr

    def with_preset(self, name: str) -> LearnConfig:
        """This config with a :data:`LEARN_PRESETS` entry applied to the fields left at
        their defaults."""
        return apply_preset(self, LEARN_PRESETS, name)

    def validate(self) -> None:
        """Check the options (not the files: :func:`anogen.diffusion.learn.validate_support`)."""
        if not self.images:
            raise InputError("no support image given: stage 1 needs at least one defect image with its mask")
        if len(self.images) != len(self.masks):
            raise InputError(f"{len(self.images)} support images but {len(self.masks)} masks; give one mask per image")
        if self.steps < LEARN_RANGES["steps"].minimum:
            raise InputError(f"steps must be at least {LEARN_RANGES['steps'].minimum}, got {self.steps}")
        if self.batch_size < LEARN_RANGES["batch_size"].minimum:
            raise InputError(f"batch size must be at least {LEARN_RANGES['batch_size'].minimum}, "
                             f"got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"learning rate must be a positive number, got {self.lr}")
        validate_crop(self.crop_to_defect, self.context_margin, self.auto_crop_below, what="crop_to_defect")
        if self.checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be at least 1, got {self.checkpoint_every}")
        if not self.init_word.strip():
            raise InputError("init word must not be empty")


#: What the app offers for stage 1 (see :mod:`anogen.ranges`).
LEARN_RANGES: dict[str, FieldRange[Any]] = {
    "steps": FieldRange(1, 100_000),
    "batch_size": FieldRange(1, 64),
    "lr": FieldRange(0.0001, 1.0),
    "seed": SEED_RANGE,
    "resolution": FieldRange(0, 2048),  # 0: the model's own (LearnConfig.resolution None)
}

#: Where the app's Steps field starts, instead of the paper's LearnConfig.steps (6000):
#: the app mostly runs on a laptop CPU, where 6000 steps take hours and a few hundred
#: already learn a usable defect. The CLI keeps the paper's default.
APP_LEARN_STEPS = 500


# ============================================================================ stage 2

# Stage-2 presets (see anogen.diffusion.presets). "paper": the reference code generated
# on the whole image (no context crop); its sampler settings are already the defaults.
GENERATE_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"crop": "off", "steps": 50, "guidance": 10.0, "eta": 0.0},
}


# GenerateConfig fields that change speed, memory or the preview, not the image; the
# seed is stored per sample, steps and guidance have manifest fields of their own.
_NOT_IMAGE_SETTINGS = ("steps", "guidance", "batch_size", "vae_batch_size", "preview_every", "seed")


@dataclass
class GenerateConfig:
    """How stage 2 samples. Defaults are the paper's (DDIM 50 steps, eta 0, guidance 10)."""

    steps: int = 50
    guidance: float = 10.0  # classifier-free guidance scale; 1.0 turns guidance off
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic DDIM)
    # Where denoising starts: 1.0 from pure noise (the paper); below 1 from the good image's
    # latent noised to that share of the schedule (SDEdit; diffusers' ``strength``), so the
    # box keeps the source's layout and texture and the token only has to add the defect.
    strength: float = 1.0
    # Put back the good image's fine texture the VAE round trip loses, where the model kept
    # the surface (anogen.diffusion.detail). Off in the paper, whose SD VAE keeps the texture.
    restore_detail: bool = False
    # "{}" in a prompt is replaced by the token. None: the token alone, or for a token learned
    # with a subject, a sentence that names it (anogen.diffusion.captions.generation_prompt).
    prompt: str | None = None
    negative_prompt: str = ""  # the unconditional prompt of classifier-free guidance
    feather: int = 0  # pixels of soft edge, inside the box only
    crop: str = "auto"  # "auto" | "on" | "off" (off: the whole image, as the reference code did)
    context_margin: float = 1.0  # crop side = box side * (1 + 2 * margin), as in stage 1
    # The side the crop is painted at; None: the side the embedding was learned at (generate_set,
    # the app), else the model's own. A larger side keeps the fine texture of a crop the model's
    # side would shrink (as LearnConfig.resolution).
    resolution: int | None = None
    auto_crop_below: float = 0.5  # auto crops when that side is below this share of the image side
    batch_size: int = 4  # requests per UNet call (each call runs 2x this with guidance)
    vae_batch_size: int = 1  # crops per VAE call; 1 keeps the peak memory of 512 px decoding low
    preview_every: int = 0  # send a preview image every k steps (0 = never)
    seed: int = 0  # base seed of generate_set; generate() uses each request's own seed

    def image_settings(self) -> dict[str, Any]:
        """The settings that shape a generated image besides ``steps`` and ``guidance``
        (which the manifest stores in fields of their own): its provenance in a set."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_IMAGE_SETTINGS}

    def with_preset(self, name: str) -> GenerateConfig:
        """This config with a :data:`GENERATE_PRESETS` entry applied to the fields left at
        their defaults."""
        return apply_preset(self, GENERATE_PRESETS, name)

    def validate(self) -> None:
        if self.steps < GENERATE_RANGES["steps"].minimum:
            raise InputError(f"steps must be >= {GENERATE_RANGES['steps'].minimum}, got {self.steps}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise InputError(f"guidance must be a finite number >= 0, got {self.guidance}")
        eta = GENERATE_RANGES["eta"]
        if self.eta not in eta:
            raise InputError(f"eta must be in [{eta.minimum:g}, {eta.maximum:g}], got {self.eta}")
        if not (math.isfinite(self.strength) and 0.0 < self.strength <= 1.0):
            raise InputError(f"strength must be in (0, 1], got {self.strength}")
        if self.feather < GENERATE_RANGES["feather"].minimum:
            raise InputError(f"feather must be >= {GENERATE_RANGES['feather'].minimum} pixels, got {self.feather}")
        validate_crop(self.crop, self.context_margin, self.auto_crop_below)
        if self.resolution is not None and self.resolution < 8:
            raise InputError(f"resolution must be at least 8 pixels, got {self.resolution}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.vae_batch_size < 1:
            raise InputError(f"VAE batch size must be >= 1, got {self.vae_batch_size}")
        if self.preview_every < 0:
            raise InputError(f"preview_every must be >= 0, got {self.preview_every}")


#: What the app offers for stage 2 (see :mod:`anogen.ranges`). Guidance starts at 1 there
#: (1 turns guidance off; below it pushes away from the defect), while the library takes
#: any finite value >= 0; strength stops short of 0, which would leave the box unchanged.
GENERATE_RANGES: dict[str, FieldRange[Any]] = {
    "steps": FieldRange(1, 1000),
    "guidance": FieldRange(1.0, 30.0),
    "eta": FieldRange(0.0, 1.0),
    "strength": FieldRange(0.05, 1.0),
    "feather": FieldRange(0, 64),
    "seed": SEED_RANGE,
}

#: Whether stage 2 paints the outline of a real defect (one of the kind's support masks,
#: :mod:`anogen.diffusion.shapes`) in each box rather than the whole box; the paper fills the box.
DEFECT_OUTLINES = False

#: How many samples :func:`anogen.diffusion.sampler.generate_set` makes per good image, and
#: how many of them share one proposed box: the paper's 2 boxes x 2 samples.
PER_IMAGE = 4
SAMPLES_PER_BOX = 2
#: The boxes proposed per good image that this gives (the app's "Boxes per image").
BOXES_PER_IMAGE = PER_IMAGE // SAMPLES_PER_BOX
#: What the app offers for the two counts it asks for (samples per box, boxes per image).
SAMPLES_PER_BOX_RANGE = FieldRange(1, 64)
BOXES_PER_IMAGE_RANGE = FieldRange(1, 16)
