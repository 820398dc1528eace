"""Model loading: every family round-trips through the real loader; bad models fail clearly."""

from __future__ import annotations

import json
import shutil
import socket
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


@pytest.mark.timing
def test_tiny_models_are_fast_and_reproducible(tmp_path):
    start = time.process_time()  # CPU time: robust to other jobs on a shared machine
    build_tiny_model(tmp_path / "a", "sd1", seed=3)
    assert time.process_time() - start < 1.0
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

    # Offline means no connection is even tried (not: it fails fast on this machine).
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("tests never touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    with pytest.raises(ModelError, match="not in the local Hugging Face cache.*--allow-download"):
        load_model("acme/not-downloaded", device="cpu")
    assert attempts == []


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


# -- single-file checkpoints ----------------------------------------------------------
# Writing a tiny model in the original CompVis/Stable Diffusion key layout lets the real
# diffusers conversion run on it, offline. Test-only inverse of diffusers' key mapping.

def unet_to_original(unet):
    cfg = unet.config
    layers = cfg.layers_per_block
    levels = len(cfg.block_out_channels)
    down_attn = ["CrossAttn" in t for t in cfg.down_block_types]
    up_attn = ["CrossAttn" in t for t in cfg.up_block_types]
    renames = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
               "mid_block.resnets.1": "middle_block.2"}
    for i in range(levels):
        for j in range(layers):
            block = 1 + i * (layers + 1) + j
            renames[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{block}.0"
            if down_attn[i]:
                renames[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{block}.1"
        if i < levels - 1:
            renames[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{1 + i * (layers + 1) + layers}.0.op"
        for j in range(layers + 1):
            block = i * (layers + 1) + j
            renames[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{block}.0"
            if up_attn[i]:
                renames[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{block}.1"
        if i < levels - 1:
            last = i * (layers + 1) + layers
            renames[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{last}.{2 if up_attn[i] else 1}.conv"
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
              "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
    out = {}
    for key, value in unet.state_dict().items():
        new = None
        for prefix in sorted(renames, key=len, reverse=True):
            if key.startswith(prefix + "."):
                rest = key[len(prefix) + 1:]
                if "resnets" in prefix:
                    head, _, tail = rest.partition(".")
                    rest = resnet[head] + "." + tail
                new = renames[prefix] + "." + rest
                break
        assert new is not None, key
        out["model.diffusion_model." + new] = value
    return out

def vae_to_original(vae):
    cfg = vae.config
    levels = len(cfg.block_out_channels)
    layers = cfg.layers_per_block
    renames = {"mid_block.attentions.0": "mid.attn_1", "conv_norm_out": "norm_out"}
    for i in range(2):
        renames[f"mid_block.resnets.{i}"] = f"mid.block_{i + 1}"
    for i in range(levels):
        for j in range(layers):
            renames[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        if i < levels - 1:
            renames[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
            renames[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{levels - 1 - i}.upsample"
        for j in range(layers + 1):
            renames[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{levels - 1 - i}.block.{j}"
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        for prefix in sorted(renames, key=len, reverse=True):
            for where in ("encoder.", "decoder.", ""):
                full = where + prefix if not prefix.startswith(("encoder", "decoder")) else prefix
                if key.startswith(full + "."):
                    new = full.replace(prefix, renames[prefix]) + key[len(full):]
                    break
            if new != key:
                break
        new = new.replace("conv_shortcut", "nin_shortcut")
        if "attn_1" in new:
            for a, b in attention.items():
                new = new.replace(f"attn_1.{a}.", f"attn_1.{b}.")
            if value.ndim == 2:
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out

def to_original(pipe_dir):
    """One flat state dict in the original single-file layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    unet = UNet2DConditionModel.from_pretrained(pipe_dir, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(pipe_dir, subfolder="vae")
    te = CLIPTextModel.from_pretrained(pipe_dir / "text_encoder")
    state = unet_to_original(unet) | vae_to_original(vae)
    state |= {"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
              for k, v in te.state_dict().items()}
    return {k: v.contiguous() for k, v in state.items()}


@pytest.mark.parametrize("suffix,inpainting", [(".safetensors", False), (".ckpt", True)])
def test_single_file_checkpoints_load_offline_with_a_local_config(tiny_models, tmp_path, suffix, inpainting):
    from safetensors.torch import save_file

    folder = tiny_models[("sd1", inpainting)]
    state = to_original(folder)
    checkpoint = tmp_path / f"tiny{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": state}, checkpoint)  # read back with weights_only=True
    else:
        save_file(state, str(checkpoint))

    model = load_model(checkpoint, device="cpu", config_dir=folder)
    reference = load_model(folder, device="cpu")
    assert (model.family, model.is_inpainting, model.resolution) == ("sd1", inpainting, 64)
    assert model.source == str(checkpoint.resolve())
    for ours, theirs in ((model.unet, reference.unet), (model.vae, reference.vae),
                         (model.text_encoder, reference.text_encoder)):
        theirs_state = theirs.state_dict()
        for key, value in ours.state_dict().items():
            assert torch.equal(value.reshape(theirs_state[key].shape), theirs_state[key]), key


def test_single_file_without_a_config_says_how_to_fix_it(tiny_models, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants
    from safetensors.torch import save_file

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    checkpoint = tmp_path / "tiny.safetensors"
    save_file(to_original(tiny_models[("sd1", False)]), str(checkpoint))
    with pytest.raises(ModelError, match="cannot convert the checkpoint.*--config-dir"):
        load_model(checkpoint, device="cpu")


@pytest.mark.parametrize("width,activation,family", [(768, "quick_gelu", "sd1"), (1024, "gelu", "sd2")])
def test_family_is_read_from_the_text_encoder_config(tiny_models, tmp_path, width, activation, family):
    folder = shutil.copytree(tiny_models[("sd1", True)], tmp_path / "model")
    config_file = folder / "text_encoder" / "config.json"
    config = json.loads(config_file.read_text())
    config.update(hidden_size=width, hidden_act=activation)
    config_file.write_text(json.dumps(config))
    layout = detect_family(folder)
    assert (layout.family, layout.is_inpainting) == (family, True)
