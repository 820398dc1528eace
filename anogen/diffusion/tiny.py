"""Tiny random latent diffusion models, for tests and benchmarks.

:func:`build_tiny_model` writes a complete model folder in the layout a real one
has (``model_index.json`` plus one sub-folder per component, saved with
``save_pretrained``), so the real loader in :mod:`anogen.diffusion.models` and
diffusers' own pipelines read it exactly as they read Stable Diffusion or CompVis
LDM. Weights are random (seeded); the tokenizer is built offline from an in-memory
vocabulary (:mod:`anogen.diffusion.tokenizer`), so nothing is downloaded.

Sizes: UNet with 32/64 channels, a text encoder 32 wide, a VAE that downsamples by
8 like the real one (so crop arithmetic in stage 2 is exercised for real), 64 px
native resolution by default. Building one takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from anogen.diffusion.captions import caption_words
from anogen.diffusion.models import quiet_progress_bars
from anogen.diffusion.tokenizer import build_bert_tokenizer as bert_tokenizer_for
from anogen.diffusion.tokenizer import build_clip_tokenizer as clip_tokenizer_for
from anogen.diffusion.tokenizer import vocabulary_size
from anogen.errors import InputError

TINY_FAMILIES = ("sd1", "sd2", "ldm")
TINY_TEXT_WIDTH = 32
TINY_MAX_LENGTH = 77
VAE_SCALE_FACTOR = 8

# Words the tiny tokenizers know as whole tokens, on top of single characters.
BASE_WORDS = (
    "a", "an", "the", "of", "photo", "picture", "image", "defect", "defects", "scratch",
    "crack", "hole", "stain", "dent", "cut", "broken", "bent", "small", "large",
    "surface", "metal", "wood", "fabric", "bottle", "screw", "part", "object", "with",
    "and", "on", "in", "one", "good", "normal", "anomaly", "damage", "damaged",
)


def tiny_vocabulary_words() -> list[str]:
    """The whole words every tiny tokenizer encodes as one token."""
    return sorted(set(BASE_WORDS) | {w for w in caption_words() if w.isalpha()})


def build_clip_tokenizer() -> Any:
    return clip_tokenizer_for(tiny_vocabulary_words(), TINY_MAX_LENGTH)


def build_bert_tokenizer() -> Any:
    return bert_tokenizer_for(tiny_vocabulary_words(), TINY_MAX_LENGTH)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        norm_num_groups=16,
        latent_channels=4,
        scaling_factor=0.18215,
    )


def _tiny_unet(resolution: int, in_channels: int, cross_attention_dim: int, linear_projection: bool):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=resolution // VAE_SCALE_FACTOR,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=(2, 4) if linear_projection else 8,
        use_linear_projection=linear_projection,
        norm_num_groups=32,
    )


def _strengthen_cross_attention(unet, sharpness: float = 8.0, gain: float = 4.0) -> None:
    """Make the prompt matter in a random UNet.

    With default initialisation a random UNet attends almost uniformly over the 77
    text tokens and adds little of them to its output, so no prompt (and no learned
    token) visibly changes a prediction and stage-1 tests could not see learning.
    Sharper attention (query/key weights scaled) and a larger output projection fix
    that; the model is random either way.
    """
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):  # the cross-attention of each transformer block
                module.to_q.weight.mul_(sharpness ** 0.5)
                module.to_k.weight.mul_(sharpness ** 0.5)
                module.to_out[0].weight.mul_(gain)


def sd_scheduler():
    """Stable Diffusion's training schedule with its DDIM settings (tiny and demo models)."""
    from diffusers import DDIMScheduler

    # The Stable Diffusion / LDM training schedule.
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def _clip_text_encoder(tokenizer, sd2: bool):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocabulary_size(tokenizer),
        hidden_size=TINY_TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TINY_MAX_LENGTH,
        # SD 2 uses OpenCLIP's text tower: plain GELU where SD 1 uses quick-GELU.
        hidden_act="gelu" if sd2 else "quick_gelu",
        projection_dim=TINY_TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def _ldm_bert(tokenizer):
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

    config = LDMBertConfig(
        vocab_size=vocabulary_size(tokenizer),
        max_position_embeddings=TINY_MAX_LENGTH,
        encoder_layers=2,
        encoder_ffn_dim=37,
        encoder_attention_heads=4,
        head_dim=8,
        d_model=TINY_TEXT_WIDTH,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LDMBertModel(config)


def build_tiny_model(
    folder: str | os.PathLike,
    family: str = "sd1",
    *,
    inpainting: bool = False,
    resolution: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random model of ``family`` (``sd1``, ``sd2`` or ``ldm``) to ``folder``.

    ``inpainting`` gives the UNet 9 input channels (latent, mask, masked-image latent)
    like ``stable-diffusion-inpainting``; it is not available for ``ldm``. Returns the
    folder, ready for :func:`anogen.diffusion.models.load_model`.
    """
    if family not in TINY_FAMILIES:
        raise InputError(f"unknown tiny model family '{family}'; choose one of {', '.join(TINY_FAMILIES)}")
    if family == "ldm" and inpainting:
        raise InputError("the LDM text-to-image family has no inpainting variant")
    if resolution % (VAE_SCALE_FACTOR * 2) or resolution <= 0:
        raise InputError(f"tiny model resolution must be a positive multiple of {VAE_SCALE_FACTOR * 2}, "
                         f"got {resolution}")
    folder = Path(folder)

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # random init draws from the global generator
    try:
        if family == "ldm":
            tokenizer = build_bert_tokenizer()
            text_encoder = _ldm_bert(tokenizer)
            unet = _tiny_unet(resolution, 4, TINY_TEXT_WIDTH, linear_projection=False)
        else:
            tokenizer = build_clip_tokenizer()
            text_encoder = _clip_text_encoder(tokenizer, sd2=family == "sd2")
            unet = _tiny_unet(resolution, 9 if inpainting else 4, TINY_TEXT_WIDTH, linear_projection=family == "sd2")
        vae = _tiny_vae()
        _strengthen_cross_attention(unet)
    finally:
        torch.random.set_rng_state(generator_state)

    # Save component by component with the index diffusers' pipelines write, without
    # importing the pipeline classes (which pull in image processors and more).
    if family == "ldm":
        components = {"vqvae": vae, "bert": text_encoder, "tokenizer": tokenizer, "unet": unet}
        index: dict[str, Any] = {
            "_class_name": "LDMTextToImagePipeline",
            "bert": ["latent_diffusion", "LDMBertModel"],
            "tokenizer": ["transformers", "BertTokenizer"],
            "vqvae": ["diffusers", "AutoencoderKL"],
        }
    else:
        components = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet}
        index = {
            "_class_name": "StableDiffusionInpaintPipeline" if inpainting else "StableDiffusionPipeline",
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
    import diffusers

    index.update({"_diffusers_version": diffusers.__version__, "scheduler": ["diffusers", "DDIMScheduler"],
                  "unet": ["diffusers", "UNet2DConditionModel"]})
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_progress_bars():
        for name, component in components.items():
            component.save_pretrained(folder / name)
        sd_scheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder
