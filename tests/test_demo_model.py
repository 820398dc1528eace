"""The shipped demo diffusion model: loads like Stable Diffusion 1.x, is small, works."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from anogen.data.demo import render_defect, render_good
from anogen.diffusion.demo_model import (
    FORBIDDEN_WORDS,
    SURFACE_NOUNS,
    blemish_tone,
    build_tokenizer,
    caption_vocabulary,
    pretraining_caption,
    render_pretraining_samples,
)

MODEL_DIR = Path(__file__).resolve().parents[1] / "resources" / "models" / "demo-ldm"


@pytest.fixture(scope="module")
def components():
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    return {
        "vae": AutoencoderKL.from_pretrained(MODEL_DIR / "vae").eval(),
        "unet": UNet2DConditionModel.from_pretrained(MODEL_DIR / "unet").eval(),
        "text_encoder": CLIPTextModel.from_pretrained(MODEL_DIR / "text_encoder", dtype=torch.float32).eval(),
        "tokenizer": CLIPTokenizer.from_pretrained(MODEL_DIR / "tokenizer"),
        "scheduler": DDIMScheduler.from_pretrained(MODEL_DIR / "scheduler"),
    }


def test_folder_is_a_small_sd1_pipeline_with_safetensors_only() -> None:
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    # A 9-channel inpainting UNet: it sees the texture around a box (docs/demo-model.md).
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler"):
        assert (MODEL_DIR / name).is_dir(), name
    weights = [p for p in MODEL_DIR.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights), weights
    total = sum(p.stat().st_size for p in weights)
    assert total < 30 * 1024 * 1024, f"{total / 2**20:.1f} MB of weights"
    text_config = json.loads((MODEL_DIR / "text_encoder" / "config.json").read_text())
    assert text_config["hidden_act"] == "quick_gelu"  # SD 1.x's CLIP, not SD 2's


def test_components_fit_together(components) -> None:
    vae, unet, text_encoder = components["vae"], components["unet"], components["text_encoder"]
    assert vae.config.latent_channels == 4
    assert unet.config.in_channels == 9  # noisy latent + box mask + masked-image latent
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    assert unet.config.sample_size * scale == 64
    assert components["tokenizer"].model_max_length == text_encoder.config.max_position_embeddings == 77


def test_vae_reconstructs_demo_images(components) -> None:
    from anogen.quality import psnr

    vae = components["vae"]
    crops = []
    for seed, category in enumerate(("fabric", "washer", "fabric", "washer")):
        image, _ = render_good(category, np.random.default_rng(100 + seed), 128)
        crops.append(image[32:96, 32:96])
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        recon = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
    recon_u8 = ((recon + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    scores = [psnr(a, b) for a, b in zip(crops, recon_u8)]
    # benchmarks/bench_demo_model.py measures the shipped VAE on 256 held-out crops
    # (docs/demo-model.md); these 4 guard against a regression. The fabric's weave at
    # its native scale is the hardest (24-25 dB here), the washer is kept at ~33 dB.
    assert min(scores) > 22.5 and float(np.mean(scores)) > 27.0, scores


def test_vae_keeps_defects_visible(components) -> None:
    """A dark defect stays clearly darker than its surroundings after encode/decode."""
    vae = components["vae"]
    kept = []
    for seed in range(4):
        image, mask = render_defect("fabric", "hole", np.random.default_rng(seed), 64)
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            recon = vae.decode(vae.encode(tensor).latent_dist.mean).sample.clamp(-1, 1)[0]
        before = tensor[0].mean(dim=0).numpy()
        after = recon.mean(dim=0).numpy()
        contrast_before = before[~mask].mean() - before[mask].mean()
        contrast_after = after[~mask].mean() - after[mask].mean()
        kept.append(contrast_after / contrast_before)
    assert min(kept) > 0.35, kept


def test_unet_follows_the_prompt(components) -> None:
    tokenizer, text_encoder, unet = components["tokenizer"], components["text_encoder"], components["unet"]
    ids = tokenizer(["a photo of fabric", "a photo of a metal washer"], padding="max_length",
                    max_length=77, return_tensors="pt").input_ids
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1, 1)
    whole_crop = torch.cat([torch.ones(2, 1, 16, 16), torch.zeros(2, 4, 16, 16)], dim=1)  # fill everything
    with torch.no_grad():
        noise = unet(torch.cat([latents, whole_crop], dim=1), torch.tensor([700, 700]), text_encoder(ids)[0]).sample
    assert torch.isfinite(noise).all()
    assert (noise[0] - noise[1]).abs().mean() > 0.01


def test_loader_reads_it_as_stable_diffusion_1() -> None:
    from anogen.diffusion.models import load_model

    model = load_model(str(MODEL_DIR), device="cpu")
    assert model.family == "sd1" and model.is_inpainting
    assert model.resolution == 64 and model.latent_channels == 4
    ids = model.tokenize(["a photo of a defect"])
    assert model.encode_token_ids(ids).shape == (1, 77, model.token_width)


def test_tokenizer_knows_caption_words_and_defect_words_as_single_tokens() -> None:
    tokenizer = build_tokenizer()
    for word in caption_vocabulary():
        ids = tokenizer(word).input_ids
        assert len(ids) == 3, f"'{word}' is split into {len(ids) - 2} tokens"
    for word in FORBIDDEN_WORDS | {"defect"}:
        assert len(tokenizer(word).input_ids) == 3, word  # stage 1 can start from these words


def test_pretraining_captions_never_name_the_few_shot_defect_kinds() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        category = rng.choice(list(SURFACE_NOUNS))
        blemishes = rng.sample(["spots", "smudge", "streak", "hairline", "discoloration", "dent", "fleck"],
                               k=rng.randint(0, 2))
        caption = pretraining_caption(category, blemishes, rng)
        assert not set(caption.split()) & FORBIDDEN_WORDS, caption
        # Every caption of a good image names the surface or part; a flaw caption may
        # be just the flaw ("a smudge"), as the model also learns flaws on their own.
        assert any(noun in caption for noun in SURFACE_NOUNS[category]) or blemishes, caption


def test_pretraining_samples_are_deterministic_and_captioned() -> None:
    first = render_pretraining_samples(3, 8, resolution=32, render_size=96, crops_per_render=2)
    again = render_pretraining_samples(3, 8, resolution=32, render_size=96, crops_per_render=2)
    assert [s.caption for s in first] == [s.caption for s in again]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again))
    assert {s.category for s in first} == {"fabric", "washer"}
    assert all(s.image.shape == (32, 32, 3) for s in first)


def test_blemish_tone_says_how_a_blemish_differs_from_its_surround() -> None:
    surface = np.full((48, 48, 3), (150, 140, 120), np.uint8)
    mask = np.zeros((48, 48), bool)
    mask[20:28, 18:30] = True

    def painted(colour) -> np.ndarray:
        image = surface.copy()
        image[mask] = colour
        return image

    assert blemish_tone(painted((60, 56, 48)), mask) == "dark"
    assert blemish_tone(painted((225, 215, 195)), mask) == "light"
    assert blemish_tone(painted((110, 120, 200)), mask) == "blue"
    assert blemish_tone(painted((150, 140, 120)), mask) is None  # no visible difference
    assert blemish_tone(surface, np.zeros_like(mask)) is None


def test_tone_captions_name_how_each_blemish_looks() -> None:
    """With ``tones`` a blemished crop's caption carries a tone word that
    :func:`blemish_tone` measured on that crop; good crops and the images are unchanged."""
    plain = render_pretraining_samples(7, 64, resolution=32, render_size=128, crops_per_render=2)
    toned = render_pretraining_samples(7, 64, resolution=32, render_size=128, crops_per_render=2, tones=True)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(plain, toned))
    tone_words = {"dark", "light", "red", "brown", "yellow", "green", "blue"}
    with_tone = [s for s in toned if set(s.caption.split()) & tone_words]
    assert len(with_tone) >= 16
    assert all(s.mask is not None for s in with_tone)
    assert all(a.caption == b.caption for a, b in zip(plain, toned) if a.mask is None)
    assert {w for s in with_tone for w in s.caption.split()} & {"dark", "light"} == {"dark", "light"}
    vocabulary = set(caption_vocabulary())
    assert all(set(s.caption.replace("-", " ").split()) <= vocabulary for s in toned)  # known words only


def test_closer_pretraining_crops_show_blemishes_larger() -> None:
    """``crop_scale`` picks how much of a render a crop covers: closer crops show a
    blemish over more of the model's canvas (the scale stage 2 paints at 128 px)."""

    def blemish_share(crop_scale: tuple[float, float]) -> float:
        samples = render_pretraining_samples(5, 48, resolution=32, render_size=128, crops_per_render=2,
                                             blemish_fraction=1.0, crop_scale=crop_scale)
        shares = [s.mask.mean() for s in samples if s.mask is not None and s.mask.any()]
        assert len(shares) >= 24
        return float(np.mean(shares))

    assert blemish_share((0.125, 0.5)) > 2 * blemish_share((0.25, 1.0))
    with pytest.raises(ValueError, match="crop_scale"):
        render_pretraining_samples(0, 2, crop_scale=(0.5, 0.25))
