"""Stage 1: learning a defect embedding on tiny models."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from anogen.data.box import Box
from anogen.data.imageio import write_image, write_mask
from anogen.diffusion.config import LearnConfig
from anogen.diffusion.crop import context_window
from anogen.diffusion.embedding_file import LearnedEmbedding, apply_embedding, load_embedding, save_embedding
from anogen.diffusion.learn import (
    encode_support,
    init_vector,
    learn_embedding,
    masked_noise_loss,
    prepare_support,
    support_loss,
)
from anogen.diffusion.models import load_model
from anogen.diffusion.tiny import build_tiny_model
from anogen.errors import InputError, JobCancelled, ModelError, TrainingDiverged


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: build_tiny_model(root / name, family, inpainting=inpainting)
            for name, family, inpainting in [("sd1", "sd1", False), ("sd2", "sd2", False),
                                             ("sd1-inpaint", "sd1", True), ("ldm", "ldm", False)]}


@pytest.fixture(scope="module")
def support(tmp_path_factory):
    """Two 64 px images of a grey surface with a dark vertical scratch, and its masks."""
    folder = tmp_path_factory.mktemp("support")
    rng = np.random.default_rng(0)
    images, masks = [], []
    for index in range(2):
        image = rng.normal(150, 10, (64, 64, 3)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((64, 64), bool)
        mask[18 + 4 * index: 42 + 4 * index, 30:34] = True
        image[mask] = 30
        write_image(folder / f"scratch_{index}.png", image)
        write_mask(folder / f"scratch_{index}_mask.png", mask)
        images.append(folder / f"scratch_{index}.png")
        masks.append(folder / f"scratch_{index}_mask.png")
    return images, masks


def quick_config(support, **changes) -> LearnConfig:
    images, masks = support
    config = LearnConfig(images=list(images), masks=list(masks), token="<scratch>", steps=4, batch_size=2,
                         lr=0.05, seed=0)
    return replace(config, **changes)


def test_learning_lowers_the_masked_loss_and_changes_only_the_placeholder_row(model_dirs, support):
    model = load_model(model_dirs["sd1"], device="cpu")
    rows_before = model.token_embedding_table().weight.detach().clone()
    unet_before = model.unet.conv_in.weight.detach().clone()
    config = quick_config(support, steps=30, batch_size=4)
    reports = []

    result = learn_embedding(model, config, progress=reports.append)

    # the objective on the support set (fixed noise and timesteps, both vectors) fell
    start = init_vector(model, "defect")
    assert support_loss(model, config, result.vector, samples=128) < support_loss(model, config, start, samples=128)
    # only the new row differs; it holds the learned vector
    table = model.token_embedding_table().weight
    token_id = model.tokenizer.convert_tokens_to_ids("<scratch>")
    assert token_id == rows_before.shape[0] and table.shape[0] == token_id + 1
    assert torch.equal(table[:token_id], rows_before)
    assert torch.equal(table[token_id], result.vector)
    assert torch.equal(model.unet.conv_in.weight, unet_before)
    # a progress report with the loss per step
    steps = [r.step for r in reports if "loss" in r.metrics]
    assert steps == list(range(1, 31)) and all(r.total == 30 for r in reports)
    assert result.steps_done == 30 and len(result.loss_curve) == 30
    assert np.isfinite(result.final_loss)


def test_same_seed_same_vector_other_seed_other_vector(model_dirs, support):
    model = load_model(model_dirs["sd1"], device="cpu")
    first = learn_embedding(model, quick_config(support))
    again = learn_embedding(model, quick_config(support))
    other = learn_embedding(model, quick_config(support, seed=1))
    assert torch.equal(first.vector, again.vector) and first.loss_curve == again.loss_curve
    assert not torch.equal(first.vector, other.vector)


def test_resume_from_a_checkpoint_continues_exactly(model_dirs, support, tmp_path):
    model = load_model(model_dirs["sd1"], device="cpu")
    whole = learn_embedding(model, quick_config(support, steps=6))

    checkpoint = tmp_path / "run.ckpt.safetensors"
    learn_embedding(model, quick_config(support, steps=3, checkpoint_path=checkpoint, checkpoint_every=3))
    resumed = learn_embedding(model, quick_config(support, steps=6, resume_from=checkpoint))
    assert torch.equal(resumed.vector, whole.vector)
    assert resumed.loss_curve == whole.loss_curve

    with pytest.raises(InputError, match="other settings.*lr"):
        learn_embedding(model, quick_config(support, steps=6, lr=0.01, resume_from=checkpoint))


def test_saved_embedding_loads_into_a_diffusers_pipeline_with_the_same_text_features(model_dirs, support, tmp_path):
    from diffusers import StableDiffusionPipeline

    learner = load_model(model_dirs["sd1"], device="cpu")
    result = learn_embedding(learner, quick_config(support))
    path = save_embedding(tmp_path / "scratch.safetensors", result)

    loaded = load_embedding(path)
    assert loaded.token == "<scratch>" and torch.equal(loaded.vector, result.vector)
    meta = loaded.metadata
    assert (meta["family"], meta["token_width"], meta["init_word"], meta["steps"], meta["seed"]) == \
        ("sd1", "32", "defect", "4", "0")
    assert meta["model"] == str(model_dirs["sd1"])
    shots = __import__("json").loads(meta["shots"])
    assert [s["image_sha256"] for s in shots] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in support[0]]
    assert loaded.loss_curve == pytest.approx(result.loss_curve)
    assert float(meta["final_loss"]) == pytest.approx(result.final_loss)

    fresh = load_model(model_dirs["sd1"], device="cpu")
    token = apply_embedding(fresh, loaded)
    pipe = StableDiffusionPipeline.from_pretrained(model_dirs["sd1"], safety_checker=None)
    pipe.load_textual_inversion(str(path))
    prompt = [f"a photo of a {token}"]
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        theirs = pipe.text_encoder(ids)[0]
        ours = fresh.encode_prompts(prompt)
    assert torch.equal(ids, fresh.tokenize(prompt))
    torch.testing.assert_close(ours, theirs)


def test_an_embedding_is_refused_by_a_model_of_another_family_or_width(model_dirs):
    sd2 = load_model(model_dirs["sd2"], device="cpu")
    from_sd1 = LearnedEmbedding(token="<scratch>", vector=torch.randn(32), family="sd1", model_source="x")
    with pytest.raises(ModelError, match="learned on a sd1 model.*is sd2"):
        apply_embedding(sd2, from_sd1)
    wide = LearnedEmbedding(token="<scratch>", vector=torch.randn(768), family="sd2", model_source="y")
    with pytest.raises(ModelError, match="768-d tokens.*uses 32-d tokens"):
        apply_embedding(sd2, wide)


@pytest.mark.parametrize("name", ["sd1-inpaint", "ldm", "sd2"])
def test_every_family_learns_only_its_placeholder(model_dirs, support, name):
    model = load_model(model_dirs[name], device="cpu")
    rows_before = model.token_embedding_table().weight.detach().clone()
    result = learn_embedding(model, quick_config(support, steps=2))
    table = model.token_embedding_table().weight
    assert torch.equal(table[: rows_before.shape[0]], rows_before)
    assert torch.isfinite(result.vector).all()
    assert not torch.equal(result.vector, init_vector(model, "defect"))
    with torch.no_grad():
        with_token = model.encode_prompts(["a photo of a <scratch>"])
        without = model.encode_prompts(["a photo of a defect"])
    assert not torch.allclose(with_token, without)


def test_cancel_stops_within_a_step_and_leaves_no_file(model_dirs, support, tmp_path):
    model = load_model(model_dirs["sd1"], device="cpu")
    cancel = threading.Event()
    steps = []

    def progress(report):
        if "loss" in report.metrics:
            steps.append(report.step)
            if report.step == 2:
                cancel.set()

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(JobCancelled):
        learn_embedding(model, quick_config(support, steps=50), progress=progress, cancel=cancel)
    assert steps == [1, 2]
    assert list(out.iterdir()) == []


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(model_dirs, support, tmp_path, monkeypatch):
    model = load_model(model_dirs["sd1"], device="cpu")
    forward = model.unet.forward
    calls = {"n": 0}

    def failing_forward(*args, **kwargs):
        calls["n"] += 1
        output = forward(*args, **kwargs)
        if calls["n"] >= 5:
            output.sample = output.sample * float("nan")
        return output

    monkeypatch.setattr(model.unet, "forward", failing_forward)
    checkpoint = tmp_path / "run.ckpt.safetensors"
    with pytest.raises(TrainingDiverged, match="step 5.*last good checkpoint.*step 4"):
        learn_embedding(model, quick_config(support, steps=10, checkpoint_path=checkpoint, checkpoint_every=2))
    assert checkpoint.is_file()
    monkeypatch.setattr(model.unet, "forward", forward)
    resumed = learn_embedding(model, quick_config(support, steps=5, resume_from=checkpoint))
    assert resumed.steps_done == 5 and np.isfinite(resumed.loss_curve).all()


def test_bad_support_sets_fail_clearly(model_dirs, support, tmp_path):
    model = load_model(model_dirs["sd1"], device="cpu")
    images, masks = support
    with pytest.raises(InputError, match="no support image"):
        learn_embedding(model, quick_config(support, images=[], masks=[]))
    with pytest.raises(InputError, match="2 support images but 1 masks"):
        learn_embedding(model, quick_config(support, masks=masks[:1]))

    empty = tmp_path / "empty_mask.png"
    write_mask(empty, np.zeros((64, 64), bool))
    with pytest.raises(InputError, match="empty_mask.png: the mask has no defect pixels"):
        learn_embedding(model, quick_config(support, masks=[masks[0], empty]))

    small = tmp_path / "small_mask.png"
    write_mask(small, np.ones((32, 32), bool))
    with pytest.raises(InputError, match="small_mask.png.*32x32.*64x64"):
        learn_embedding(model, quick_config(support, masks=[small, masks[1]]))

    with pytest.raises(InputError, match="'defect' is already a word"):
        learn_embedding(model, quick_config(support, token="defect"))
    with pytest.raises(InputError, match="resolution 60"):
        learn_embedding(model, quick_config(support, resolution=60))


def test_masked_loss_ignores_everything_outside_the_mask():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 4, 8, 8, generator=generator)
    target = torch.randn(2, 4, 8, 8, generator=generator)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:4, 2:5] = 1
    changed = target.clone()
    changed[:, :, 6:, 6:] += 100  # outside the mask
    assert masked_noise_loss(prediction, target, mask) == masked_noise_loss(prediction, changed, mask)
    inside = ((prediction - target) ** 2)[:, :, 2:4, 2:5]
    torch.testing.assert_close(masked_noise_loss(prediction, target, mask), inside.sum() / prediction.numel())
    torch.testing.assert_close(masked_noise_loss(prediction, target, mask, area_normalised=True), inside.mean())


def test_small_defects_are_cropped_with_context_and_thin_ones_survive(model_dirs, tmp_path):
    mask = np.zeros((512, 768), bool)
    mask[300:310, 600:620] = True  # a 20x10 px defect in a large image
    window = context_window(Box.from_mask(mask), 512, 768)
    assert window.width == window.height == 60
    assert window.x0 <= 600 and window.x1 >= 620 and window.y0 <= 300 and window.y1 >= 310
    assert context_window(Box.from_mask(mask), 512, 768, mode="off") == Box(0, 0, 768, 512)
    assert context_window(Box(10, 10, 90, 90), 100, 100) == Box(0, 0, 100, 100)

    # a one-pixel scratch still reaches the latent-grid loss mask
    image = np.full((256, 256, 3), 128, np.uint8)
    thin = np.zeros((256, 256), bool)
    thin[40:200, 101] = True
    write_image(tmp_path / "thin.png", image)
    write_mask(tmp_path / "thin_mask.png", thin)
    config = LearnConfig(images=[tmp_path / "thin.png"], masks=[tmp_path / "thin_mask.png"], crop_to_defect="off")
    shots = prepare_support(config, 64)
    model = load_model(model_dirs["sd1"], device="cpu")
    encoded = encode_support(model, shots, flip=True)
    assert encoded.latents.shape == (2, 4, 8, 8)
    assert encoded.loss_masks[0].sum() > 0
    torch.testing.assert_close(encoded.loss_masks[1], encoded.loss_masks[0].flip(-1))


def test_v_prediction_models_learn_against_the_velocity(model_dirs, support, tmp_path):
    import json
    import shutil

    from anogen.diffusion.learn import _batch_loss, _draw_batch

    folder = shutil.copytree(model_dirs["sd2"], tmp_path / "sd2-v")
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(scheduler_file.read_text())
    scheduler_file.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    model = load_model(folder, device="cpu")
    assert model.prediction_type == "v_prediction"

    learn = quick_config(support)
    encoded = encode_support(model, prepare_support(learn, 64), flip=True)
    from anogen.diffusion.embedding_file import add_placeholder_token

    add_placeholder_token(model, learn.token)
    batch = _draw_batch(encoded, learn, 0, 1000)
    scheduler = model.ddpm_scheduler()
    with torch.no_grad():
        loss = _batch_loss(model, scheduler, batch, False)
        noisy = scheduler.add_noise(batch.latents, batch.noise, batch.timesteps)
        prediction = model.unet(noisy, batch.timesteps,
                                encoder_hidden_states=model.encode_prompts(batch.prompts)).sample
        velocity = scheduler.get_velocity(batch.latents, batch.noise, batch.timesteps)
    torch.testing.assert_close(loss, masked_noise_loss(prediction, velocity, batch.loss_masks))
    assert not torch.allclose(loss, masked_noise_loss(prediction, batch.noise, batch.loss_masks))


def test_gradient_checkpointing_learns_the_same_vector(model_dirs, support):
    plain = learn_embedding(load_model(model_dirs["sd1"], device="cpu"), quick_config(support, steps=2))
    model = load_model(model_dirs["sd1"], device="cpu")
    saving = learn_embedding(model, quick_config(support, steps=2, gradient_checkpointing=True))
    assert model.unet.is_gradient_checkpointing
    torch.testing.assert_close(saving.vector, plain.vector)
