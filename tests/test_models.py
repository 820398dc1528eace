"""Model loading: every family round-trips through the real loader; bad models fail clearly."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from anogen.diffusion.models import detect_family, load_model
from anogen.diffusion.tiny import build_clip_tokenizer, build_tiny_model, tiny_vocabulary_words
from anogen.errors import ModelError

VARIANTS = [("sd1", False), ("sd1", True), ("sd2", False), ("sd2", True), ("ldm", False)]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {(family, inpainting): build_tiny_model(root / f"{family}-{int(inpainting)}", family,
                                                   inpainting=inpainting)
            for family, inpainting in VARIANTS}


@pytest.mark.parametrize("family,inpainting", VARIANTS)
def test_each_family_loads_back_with_its_facts(tiny_models, family, inpainting):
    model = load_model(tiny_models[(family, inpainting)], device="cpu")

    assert model.family == family
    assert model.is_inpainting == inpainting
    assert model.unet.config.in_channels == (9 if inpainting else 4)
    assert (model.resolution, model.token_width, model.latent_channels) == (64, 32, 4)
    assert model.vae_scale_factor == 8 and model.latent_size == 8
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    # frozen: nothing trains by accident, dropout is off
    for module in (model.unet, model.vae, model.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())

    with torch.no_grad():
        text = model.encode_prompts(["a photo of a defect", "a scratch"])
        latents = model.encode_images(torch.zeros(2, 3, 64, 64))
        images = model.decode_latents(latents)
    assert text.shape == (2, model.max_length, 32)
    assert latents.shape == (2, 4, 8, 8)
    assert images.shape == (2, 3, 64, 64) and images.abs().max() <= 1
    assert model.ddim_scheduler().config.num_train_timesteps == 1000


def test_tiny_models_are_fast_and_reproducible(tmp_path):
    start = time.perf_counter()
    build_tiny_model(tmp_path / "a", "sd1", seed=3)
    assert time.perf_counter() - start < 1.0
    build_tiny_model(tmp_path / "b", "sd1", seed=3)
    build_tiny_model(tmp_path / "c", "sd1", seed=4)
    a, b, c = (load_model(tmp_path / name, device="cpu") for name in "abc")
    assert torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    assert not torch.equal(a.unet.conv_in.weight, c.unet.conv_in.weight)


def test_tiny_tokenizer_knows_caption_words_as_single_tokens():
    tokenizer = build_clip_tokenizer()
    for word in tiny_vocabulary_words():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    # unknown words still encode (as characters), never as one unknown token
    ids = tokenizer("zebra", add_special_tokens=False).input_ids
    assert len(ids) > 1 and tokenizer.unk_token_id not in ids


def test_same_prompt_same_conditioning_and_different_prompts_differ(tiny_models):
    model = load_model(tiny_models[("sd1", False)], device="cpu")
    with torch.no_grad():
        a, b, c = model.encode_prompts(["a photo of a defect", "a photo of a defect", "a photo of a hole"])
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_memory_savers_keep_the_results(tiny_models):
    plain = load_model(tiny_models[("sd1", False)], device="cpu")
    saving = load_model(tiny_models[("sd1", False)], device="cpu", attention_slicing=True, vae_tiling=True)
    saving.enable_gradient_checkpointing()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = plain.encode_prompts(["a defect"])
        out_plain = plain.unet(latents, 10, encoder_hidden_states=text).sample
        out_saving = saving.unet(latents, 10, encoder_hidden_states=text).sample
    torch.testing.assert_close(out_plain, out_saving, rtol=1e-4, atol=1e-5)


def test_hub_id_is_read_from_the_local_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-sd"
    build_tiny_model(repo / "snapshots" / ("a" * 40), "sd2")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))

    model = load_model("acme/tiny-sd", device="cpu")
    assert model.family == "sd2" and model.source == "acme/tiny-sd"

    start = time.perf_counter()
    with pytest.raises(ModelError, match="not in the local Hugging Face cache.*--allow-download"):
        load_model("acme/not-downloaded", device="cpu")
    assert time.perf_counter() - start < 5  # offline: no waiting on the network


def test_empty_folder_says_what_was_found_and_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError) as info:
        load_model(tmp_path, device="cpu")
    message = str(info.value)
    assert "missing unet/" in message and "notes.txt" in message and "text_encoder/" in message


def test_incomplete_and_foreign_folders_are_refused(tiny_models, tmp_path):
    broken = shutil.copytree(tiny_models[("sd1", False)], tmp_path / "broken")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelError, match="cannot load the UNet"):
        load_model(broken, device="cpu")

    odd = shutil.copytree(tiny_models[("sd1", False)], tmp_path / "odd")
    config = json.loads((odd / "unet" / "config.json").read_text())
    config["in_channels"] = 5
    (odd / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="5 input channels; expected 4 .* or 9"):
        detect_family(odd)

    xl = shutil.copytree(tiny_models[("sd1", False)], tmp_path / "xl")
    (xl / "text_encoder_2").mkdir()
    with pytest.raises(ModelError, match="XL"):
        load_model(xl, device="cpu")

    no_config = shutil.copytree(tiny_models[("ldm", False)], tmp_path / "ldm-broken")
    (no_config / "bert" / "config.json").unlink()
    with pytest.raises(ModelError, match="bert: no config.json"):
        load_model(no_config, device="cpu")


def test_missing_paths_and_bad_single_files_fail_clearly(tmp_path):
    with pytest.raises(ModelError, match="no such model file or folder"):
        load_model(tmp_path / "absent.safetensors", device="cpu")
    with pytest.raises(ModelError, match="not a Hugging Face id"):
        load_model("no such model", device="cpu")

    from safetensors.torch import save_file

    foreign = tmp_path / "classifier.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(ModelError, match="no Stable Diffusion UNet weights"):
        load_model(foreign, device="cpu")

    garbage = tmp_path / "model.ckpt"
    garbage.write_bytes(b"\x80\x04not a checkpoint")
    with pytest.raises(ModelError, match="cannot read the checkpoint"):
        load_model(garbage, device="cpu")
