"""The embedded demo model: a small Stable-Diffusion-1.x-style latent diffusion model.

Real Stable Diffusion weights cannot ship with the project, so the demo trains its own
tiny member of the same family on the procedural demo data (see
``scripts/train_demo_model.py``). This module holds what the training script and the
tests share: the architecture, the offline tokenizer, the pretraining captions and the
training data. Nothing here is used when a model is *loaded*: the shipped folder is an
ordinary diffusers ``StableDiffusionPipeline`` folder that the generic loader in
:mod:`anogen.diffusion.models` reads like any SD 1.x model.

Pretraining captions name the surface or part and, at most, a *generic* blemish. They
never name the demo's few-shot defect kinds (:data:`FORBIDDEN_WORDS`), so stage 1 must
find those from a few masked examples, as it would with a real model.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from anogen.data.demo_render import BLEMISH_KINDS, DEFECT_KINDS, DEMO_CATEGORIES, render_blemish, render_good
from anogen.diffusion.tokenizer import build_clip_tokenizer, clip_vocabulary, vocabulary_size

# The few-shot defect kinds of the demo: never in a pretraining caption.
FORBIDDEN_WORDS: frozenset[str] = frozenset(k for kinds in DEFECT_KINDS.values() for k in kinds)

MAX_TOKENS = 77  # SD 1.x prompt length; the text encoder has this many positions


@dataclass
class DemoModelConfig:
    """Architecture of the demo model (defaults are the shipped model)."""

    resolution: int = 64  # native image side; latents are resolution / 4
    vae_channels: tuple[int, ...] = (32, 64, 64)  # 3 levels: 2 downsamplings -> x4
    vae_layers_per_block: int = 1
    latent_channels: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_layers_per_block: int = 1
    unet_head_dim: int = 32  # channels per attention head
    # A 9-channel inpainting UNet (latent + box mask + masked-image latent, as
    # stable-diffusion-inpainting): it sees the texture around a box, so it continues
    # the weave and paints only the defect. Measured against a 4-channel UNet in
    # docs/demo-model.md.
    inpainting: bool = True

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- captions

SURFACE_NOUNS: dict[str, tuple[str, ...]] = {
    "fabric": ("fabric", "woven fabric", "cloth", "woven cloth", "textile", "fabric surface", "weave"),
    "washer": ("metal washer", "steel washer", "washer", "metal ring", "steel ring", "metal part", "flat washer"),
}
# How a caption may refer to each generic blemish kind (none is a few-shot kind).
BLEMISH_WORDS: dict[str, tuple[str, ...]] = {
    "spots": ("spots", "dark spots", "dots", "blemish"),
    "smudge": ("smudge", "faint smudge", "blemish"),
    "streak": ("streak", "mark", "blemish"),
    "hairline": ("thin line", "line", "mark"),
    "discoloration": ("discoloration", "colored patch", "blemish"),
    "dent": ("dent", "small dent", "pit"),
    "fleck": ("fleck", "speck", "foreign particle"),
}
GENERIC_FLAWS = ("blemish", "small blemish", "flaw", "defect", "small defect", "mark", "anomaly")
GOOD_TEMPLATES = (
    "a photo of {a} {noun}",
    "a close-up photo of {a} {noun}",
    "an inspection photo of {a} {noun}",
    "a top view of {a} {noun}",
    "a picture of {a} {noun}",
    "a clean {noun}",
    "a good {noun}",
    "{noun}",
)
FLAW_TEMPLATES = (
    "a photo of {a} {noun} with {b} {flaw}",
    "a close-up photo of {a} {noun} with {b} {flaw}",
    "an inspection photo of {a} {noun} with {b} {flaw}",
    "{a} {noun} with {b} {flaw}",
    "a photo of {b} {flaw} on {a} {noun}",
    "{b} {flaw}",
)
# Extra everyday words, so the vocabulary is not only the captions (stage 1 and users
# may write prompts with them; their embeddings stay close to their initial values).
EXTRA_WORDS = (
    "defect", "defects", "damage", "damaged", "broken", "normal", "anomaly", "anomalous", "surface", "object",
    "hole", "holes", "scratch", "scratches", "stain", "stains", "crack", "cracks", "contamination",
    "contaminated", "dirt", "dirty", "rust", "oil", "missing", "piece", "cut", "bent", "torn", "tear",
    "wood", "bottle", "screw", "carpet", "leather", "tile", "grid", "cable", "capsule", "hazelnut", "nut",
    "pill", "toothbrush", "transistor", "zipper", "metal", "plastic", "glass", "paper", "red", "green",
    "blue", "yellow", "brown", "black", "white", "gray", "grey", "light", "dark", "bright", "big", "tiny",
    "large", "small", "long", "short", "round", "square", "rough", "smooth", "sharp", "blurry", "image",
    "picture", "view", "one", "two", "three", "and", "or", "in", "on", "at", "of", "with", "without",
    "the", "a", "an", "this", "that", "is", "are", "part", "parts", "industrial", "product", "photo",
    "close", "detailed", "cropped", "macro", "rendering", "rendition", "showing", "good", "clean",
)


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _plural(phrase: str) -> bool:
    return phrase.endswith("s") and not phrase.endswith("ss")


def pretraining_caption(category: str, blemishes: Iterable[str], rng: random.Random,
                        tone: str | None = None) -> str:
    """A caption for one pretraining image: names the surface/part and at most a generic flaw.

    ``tone`` (:func:`blemish_tone`, e.g. "dark", "light", "blue") is put before the flaw,
    so the text says what the blemish looks like, not only that there is one."""
    noun = rng.choice(SURFACE_NOUNS[category])
    blemishes = list(blemishes)
    if not blemishes:
        template = rng.choice(GOOD_TEMPLATES)
        return template.format(a=_article(noun), noun=noun).replace("  ", " ").strip()
    if rng.random() < 0.6:
        flaw = rng.choice(BLEMISH_WORDS[rng.choice(blemishes)])
    else:
        flaw = rng.choice(GENERIC_FLAWS)
    if tone:
        flaw = f"{tone} {flaw.removeprefix('dark ')}"
    template = rng.choice(FLAW_TEMPLATES)
    article = "" if _plural(flaw) else _article(flaw)
    caption = template.format(a=_article(noun), noun=noun, b=article, flaw=flaw)
    return " ".join(caption.split())


def caption_vocabulary() -> list[str]:
    """Every whole word the demo tokenizer encodes as a single token."""
    from anogen.diffusion.captions import caption_words

    words: set[str] = set(EXTRA_WORDS)
    phrases = [n for nouns in SURFACE_NOUNS.values() for n in nouns]
    phrases += [w for words_ in BLEMISH_WORDS.values() for w in words_] + list(GENERIC_FLAWS)
    phrases += list(GOOD_TEMPLATES) + list(FLAW_TEMPLATES) + list(BLEMISH_KINDS)
    for phrase in phrases:
        for word in phrase.replace("-", " - ").split():
            if not word.startswith("{"):
                words.add(word)
    # Stage 1's caption templates, so its prompts tokenize into known words.
    words.update(w for w in caption_words() if w.isalpha())
    return sorted(words)


# --------------------------------------------------------------------------- tokenizer

def demo_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The demo tokenizer's CLIP-format vocabulary and merges: every word of
    :func:`caption_vocabulary` is one token (see :mod:`anogen.diffusion.tokenizer`)."""
    return clip_vocabulary(caption_vocabulary())


def build_tokenizer():
    return build_clip_tokenizer(caption_vocabulary(), MAX_TOKENS)


# --------------------------------------------------------------------------- components

def build_vae(config: DemoModelConfig):
    from diffusers import AutoencoderKL

    levels = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.vae_channels),
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=32,
        # No attention in the middle: a purely convolutional VAE can be trained on
        # crops and used on any size (stage 2 pastes crops of larger images).
        mid_block_add_attention=False,
        sample_size=config.resolution,
        scaling_factor=1.0,  # set from the latent statistics after training
    )


def build_text_encoder(config: DemoModelConfig, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(
        vocab_size=vocabulary_size(tokenizer),
        hidden_size=config.text_width,
        intermediate_size=config.text_width * 4,
        projection_dim=config.text_width,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="quick_gelu",  # as OpenAI CLIP in SD 1.x
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(text_config)


def build_unet(config: DemoModelConfig):
    from diffusers import UNet2DConditionModel

    levels = len(config.unet_channels)
    # Attention at every level but the deepest plain one, as in SD 1.x.
    down = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1)
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=2 * config.latent_channels + 1 if config.inpainting else config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=tuple(config.unet_channels),
        layers_per_block=config.unet_layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=config.text_width,
        attention_head_dim=tuple(max(1, c // config.unet_head_dim) for c in config.unet_channels),
        norm_num_groups=32,
    )


def build_scheduler():
    from anogen.diffusion.tiny import sd_scheduler

    return sd_scheduler()  # Stable Diffusion 1.x's training schedule and DDIM settings


# Hue (OpenCV's 0-180 scale) of the colour words a tone may use, for blemishes whose
# colour, not only their brightness, differs from the surface around them.
_HUE_WORDS = ((10, "red"), (22, "brown"), (38, "yellow"), (85, "green"), (135, "blue"), (180, "red"))


def blemish_tone(image: np.ndarray, mask: np.ndarray) -> str | None:
    """How a blemish differs from the surface around it, as one word of the tokenizer's
    vocabulary: a colour ("blue", "brown", ...) when its colour shifts, else "dark" or
    "light"; None when it hardly differs (or the mask is too small to tell).

    The pretraining blemishes come in both polarities (a spot is dark or light), so a
    caption that only says "spots" teaches the model their average, a grey patch."""
    mask = mask.astype(bool)
    if mask.sum() < 2:
        return None
    around = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8), iterations=2).astype(bool) & ~mask
    if around.sum() < 4:
        return None
    inside, outside = image[mask].astype(np.float32).mean(0), image[around].astype(np.float32).mean(0)
    shift = inside - outside
    chroma = shift - shift.mean()
    if np.abs(chroma).max() > 25:
        pixel = np.clip(inside, 0, 255).astype(np.uint8)[None, None]
        hue = int(cv2.cvtColor(pixel, cv2.COLOR_RGB2HSV)[0, 0, 0])
        return next(word for limit, word in _HUE_WORDS if hue <= limit)
    brightness = float(inside.mean() + 1) / float(outside.mean() + 1)
    if brightness < 0.8:
        return "dark"
    if brightness > 1.25:
        return "light"
    return None


# --------------------------------------------------------------------------- training data

@dataclass
class PretrainingSample:
    image: np.ndarray  # RGB uint8 at the model resolution
    caption: str
    category: str
    blemishes: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None  # bool, where the blemishes are (None for a good crop)


def _crop_box(rng: np.random.Generator, size: int, side: int, focus: np.ndarray | None) -> tuple[int, int]:
    """Top-left corner of a ``side`` crop; when ``focus`` (bool mask) is given the crop contains part of it."""
    if focus is not None and focus.any():
        ys, xs = np.nonzero(focus)
        index = int(rng.integers(len(xs)))
        cx, cy = xs[index], ys[index]
        x0 = int(np.clip(cx - rng.integers(side // 6, side - side // 6 + 1), 0, size - side))
        y0 = int(np.clip(cy - rng.integers(side // 6, side - side // 6 + 1), 0, size - side))
        return x0, y0
    return int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))


def render_pretraining_samples(seed: int, count: int, *, resolution: int = 64, render_size: int = 256,
                               crops_per_render: int = 4, blemish_fraction: float = 0.6,
                               crop_scale: tuple[float, float] = (0.25, 1.0),
                               tones: bool = False) -> list[PretrainingSample]:
    """Crops of good and blemished demo renders, resized to ``resolution``, with captions.

    Each render at ``render_size`` yields several crops of random scale (``crop_scale``:
    the shortest and longest crop side as a share of the render's; by default a quarter
    of the image up to all of it), which is what stage 2's crop-and-paste path feeds the
    model. Crops of blemished renders contain the blemish. ``tones``: captions say how
    the blemish looks in the crop (:func:`blemish_tone`).
    """
    low, high = crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDE30]))
    text_rng = random.Random(seed)
    samples: list[PretrainingSample] = []
    render_index = 0
    while len(samples) < count:
        category = DEMO_CATEGORIES[render_index % len(DEMO_CATEGORIES)]
        render_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB1E5, render_index]))
        render_index += 1
        blemishes: list[str] = []
        mask: np.ndarray | None
        if rng.random() < blemish_fraction:
            blemish_rng = random.Random(int(rng.integers(1 << 31)))
            blemishes = blemish_rng.sample(BLEMISH_KINDS, k=1 if blemish_rng.random() < 0.75 else 2)
            image, mask = render_blemish(category, render_rng, render_size, kind=blemishes)
        else:
            image, foreground = render_good(category, render_rng, render_size)
            mask = foreground if category == "washer" else None
        for _ in range(crops_per_render):
            side = max(8, int(render_size * rng.uniform(low, high)))
            x0, y0 = _crop_box(rng, render_size, side, mask)
            crop = image[y0:y0 + side, x0:x0 + side]
            crop_mask = mask[y0:y0 + side, x0:x0 + side] if blemishes and mask is not None else None
            tone = blemish_tone(crop, crop_mask) if tones and crop_mask is not None else None
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
                crop_mask = None if crop_mask is None else crop_mask[:, ::-1]
            crop = cv2.resize(np.ascontiguousarray(crop), (resolution, resolution), interpolation=cv2.INTER_AREA)
            if crop_mask is not None:
                crop_mask = cv2.resize(np.ascontiguousarray(crop_mask, dtype=np.uint8), (resolution, resolution),
                                       interpolation=cv2.INTER_AREA) > 0
            samples.append(PretrainingSample(crop, pretraining_caption(category, blemishes, text_rng, tone), category,
                                             blemishes, crop_mask))
    return samples[:count]
