"""Stage 2 on tiny random models: exact background, seeds, crops, inpainting UNets, cancel."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from anogen.data.box import Box
from anogen.diffusion.config import GenerateConfig
from anogen.diffusion.sampler import GenerationRequest, composite, generate
from anogen.errors import InputError, JobCancelled, ModelError

FAST = GenerateConfig(steps=2, guidance=5.0, batch_size=4)


def _with_token(model, token="<defect-kind>"):
    """Teach the model a placeholder token with a random vector, as a learned one would be."""
    import torch

    from anogen.diffusion.embedding_file import LearnedEmbedding, apply_embedding

    vector = torch.randn(model.token_width, generator=torch.Generator().manual_seed(0))
    return apply_embedding(model, LearnedEmbedding(token=token, vector=vector, family=model.family))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from anogen.diffusion.models import load_model
    from anogen.diffusion.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("sd1") / "model", "sd1")
    model = load_model(folder, device="cpu")
    return model, _with_token(model)


@pytest.fixture(scope="module")
def tiny_inpainting(tmp_path_factory):
    from anogen.diffusion.models import load_model
    from anogen.diffusion.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("inpaint") / "model", "sd1", inpainting=True)
    model = load_model(folder, device="cpu")
    return model, _with_token(model)


def _image(h=80, w=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _changed(source, output):
    return (source != output).any(axis=2)


def _assert_only_box_changed(source, output, box):
    changed = _changed(source, output)
    inside = box.to_mask(*source.shape[:2])
    assert not changed[~inside].any(), "pixels outside the box changed"
    assert changed[inside].mean() > 0.5, "the box was not repainted"


def test_outside_the_box_is_bit_identical_inside_differs(tiny):
    model, token = tiny
    image = _image()
    box = Box(20, 16, 52, 40)
    [result] = generate(model, token, [GenerationRequest(image, box, seed=1)], FAST)
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    _assert_only_box_changed(image, result.image, box)


def test_same_seed_same_image_other_seed_other_image(tiny):
    model, token = tiny
    image = _image()
    box = Box(10, 10, 50, 50)
    requests = [GenerationRequest(image, box, 7), GenerationRequest(image, box, 8), GenerationRequest(image, box, 7)]
    first, other, again = generate(model, token, requests, FAST)
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)


def test_crop_and_paste_on_a_large_image_with_a_small_box(tiny):
    model, token = tiny
    image = _image(2048, 2048, seed=3)
    box = Box(1500, 300, 1560, 360)
    [result] = generate(model, token, [GenerationRequest(image, box, 0)], FAST)
    assert result.crop.width == result.crop.height == 180  # 60 px box with a 1-box margin
    assert result.crop.x0 <= box.x0 and result.crop.x1 >= box.x1
    _assert_only_box_changed(image, result.image, box)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_inpainting"])
def test_a_rotated_box_repaints_only_its_turned_rectangle(fixture, request):
    model, token = request.getfixturevalue(fixture)
    image = _image()
    box = Box(30, 14, 44, 62, 35.0)
    [result] = generate(model, token, [GenerationRequest(image, box, seed=2)], GenerateConfig(steps=2, feather=2))
    turned = box.to_mask(*image.shape[:2])
    assert not (turned == box.bounds.to_mask(*image.shape[:2])).all()  # the corners of the bounds stay
    _assert_only_box_changed(image, result.image, box)
    assert result.crop.x0 <= box.bounds.x0 and result.crop.x1 >= box.bounds.x1


def test_nine_channel_inpainting_unet(tiny_inpainting):
    model, token = tiny_inpainting
    assert model.is_inpainting and model.unet.config.in_channels == 9
    image = _image(64, 64)
    box = Box(8, 24, 40, 56)
    results = generate(model, token, [GenerationRequest(image, box, 5), GenerationRequest(image, box, 5)], FAST)
    _assert_only_box_changed(image, results[0].image, box)
    np.testing.assert_array_equal(results[0].image, results[1].image)


def test_progress_preview_and_cancel_within_a_step(tiny):
    model, token = tiny
    image = _image()
    requests = [GenerationRequest(image, Box(4, 4, 30, 30), s) for s in range(3)]
    reports = []
    generate(model, token, requests, GenerateConfig(steps=2, batch_size=2, preview_every=1), reports.append)
    assert [r.step for r in reports] == [1, 2, 3, 4] and {r.total for r in reports} == {4}
    previews = [r.preview for r in reports if r.preview is not None]
    assert len(previews) == 2 and previews[0].shape == image.shape  # step 1 of each batch, not the last

    cancel = threading.Event()
    seen = []

    def stop_after_first_step(report):
        seen.append(report.step)
        cancel.set()

    with pytest.raises(JobCancelled):
        generate(model, token, requests, GenerateConfig(steps=2, batch_size=2), stop_after_first_step, cancel)
    assert seen == [1]


def test_feathered_edge_stays_inside_the_box():
    source = np.zeros((20, 20, 3), dtype=np.uint8)
    generated = np.full((20, 20, 3), 200, dtype=np.uint8)
    box = Box(5, 5, 15, 15)
    result = composite(source, generated, Box(0, 0, 20, 20), box, feather=3)
    assert not result[~box.to_mask(20, 20)].any()
    assert 0 < result[5, 10, 0] < result[7, 10, 0] < 200 and result[10, 10, 0] == 200


def test_bad_requests_fail_clearly(tiny):
    model, token = tiny
    image = _image()
    with pytest.raises(InputError, match="off the 96x80 image"):
        generate(model, token, [GenerationRequest(image, Box(80, 10, 120, 30), 0)], FAST)
    with pytest.raises(InputError, match="empty"):
        generate(model, token, [GenerationRequest(image, Box(10, 10, 10, 30), 0)], FAST)
    with pytest.raises(InputError, match="RGB uint8"):
        generate(model, token, [GenerationRequest(image.astype(np.float32), Box(0, 0, 8, 8), 0)], FAST)
    with pytest.raises(ModelError, match="not in the model's vocabulary"):
        generate(model, "<never-learned>", [GenerationRequest(image, Box(0, 0, 8, 8), 0)], FAST)
    with pytest.raises(InputError, match="steps"):
        generate(model, token, [GenerationRequest(image, Box(0, 0, 8, 8), 0)], GenerateConfig(steps=0))


def test_blended_sampling_keeps_the_good_latent_outside_the_box(tiny):
    """Eq. 7: before every step the latent outside the box is the good image's latent
    noised to that step; at the last step (t = 1) that is almost the clean latent."""
    import torch

    model, token = tiny
    image = _image(64, 64, seed=9)
    box = Box(16, 16, 48, 40)  # latent cells x 2..6, y 2..5
    inputs = []
    original_forward = model.unet.forward

    def spy(sample, timestep, *args, **kwargs):
        inputs.append((int(timestep), sample[:1].clone()))  # the unconditional half's latent
        return original_forward(sample, timestep, *args, **kwargs)

    model.unet.forward = spy
    try:
        generate(model, token, [GenerationRequest(image, box, 0)], GenerateConfig(steps=2, crop="off"))
    finally:
        del model.unet.forward
    last_timestep, last_input = inputs[-1]
    assert last_timestep == 1
    clean = model.encode_images(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0)
    outside = torch.ones_like(clean, dtype=torch.bool)
    outside[:, :, 2:5, 2:6] = False
    assert (last_input - clean)[outside].abs().max() < 0.2
    assert (last_input - clean)[~outside].abs().mean() > 0.2


def test_strength_starts_part_way_and_counts_only_the_steps_it_takes(tiny):
    model, token = tiny
    image = _image()
    box = Box(20, 16, 52, 40)
    reports = []
    [half] = generate(model, token, [GenerationRequest(image, box, 1)],
                      GenerateConfig(steps=4, guidance=5.0, strength=0.5), reports.append)
    assert [r.step for r in reports] == [1, 2] and {r.total for r in reports} == {2}
    _assert_only_box_changed(image, half.image, box)
    with pytest.raises(InputError, match="strength"):
        generate(model, token, [GenerationRequest(image, box, 1)], GenerateConfig(steps=4, strength=0.0))


class _KeepSurfaceUNet:
    """A UNet that always predicts the noise leading back to ``clean``: DDIM's clean-image
    estimate is then the good image's own latent at every step (a model that keeps the
    surface and paints nothing)."""

    def __init__(self, unet, clean, alphas_cumprod):
        self.unet, self.clean, self.alphas = unet, clean, alphas_cumprod

    def __getattr__(self, name):
        return getattr(self.unet, name)

    def __call__(self, sample, timestep, encoder_hidden_states):
        from types import SimpleNamespace

        alpha = self.alphas[int(timestep)]
        noisy = sample[:, : self.clean.shape[1]]
        return SimpleNamespace(sample=(noisy - alpha.sqrt() * self.clean) / (1 - alpha).sqrt())


@pytest.mark.parametrize("fixture", ["tiny", "tiny_inpainting"])
def test_restored_detail_gives_back_the_source_where_the_model_kept_the_surface(fixture, request, monkeypatch):
    """Without it the box holds the VAE's lossy reconstruction of the surface; with it,
    the source exactly, because nothing was painted there."""
    import torch

    model, token = request.getfixturevalue(fixture)
    image = _image(model.resolution, model.resolution, seed=5)
    box = Box(20, 16, 52, 40)
    inside = box.to_mask(*image.shape[:2])
    canvas = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    clean = model.encode_images(canvas)
    scheduler = model.ddim_scheduler()
    scheduler.final_alpha_cumprod = torch.tensor(1.0)  # the last step lands on the estimate itself
    monkeypatch.setattr(model, "ddim_scheduler", lambda: scheduler)
    monkeypatch.setattr(model, "unet", _KeepSurfaceUNet(model.unet, clean, scheduler.alphas_cumprod))
    config = GenerateConfig(steps=4, guidance=1.0, crop="off")
    [plain] = generate(model, token, [GenerationRequest(image, box, 1)], config)
    [restored] = generate(model, token, [GenerationRequest(image, box, 1)], replace(config, restore_detail=True))

    def error(result):
        return np.abs(result.image[inside].astype(int) - image[inside]).mean()

    assert error(plain) > 10  # the tiny VAE is lossy
    assert error(restored) < 0.1 * error(plain)
    np.testing.assert_array_equal(restored.image[~inside], image[~inside])


def _latent_sides(model, run):
    """The latent sides the UNet saw while ``run()`` ran."""
    sides: list[int] = []
    handle = model.unet.register_forward_hook(lambda _m, args, _out: sides.append(int(args[0].shape[-1])))
    try:
        run()
    finally:
        handle.remove()
    return sorted(set(sides))


def test_a_larger_resolution_paints_the_crop_on_a_finer_latent_grid(tiny):
    """A crop larger than the model's side keeps its detail when painted at its own scale."""
    model, token = tiny
    image = _image(256, 256, seed=4)
    box = Box(100, 100, 160, 150)
    native = _latent_sides(model, lambda: generate(model, token, [GenerationRequest(image, box, 0)], FAST))
    assert native == [model.latent_size]

    results: list = []
    larger = replace(FAST, resolution=2 * model.resolution)
    finer = _latent_sides(model, lambda: results.extend(
        generate(model, token, [GenerationRequest(image, box, 0)], larger)))
    assert finer == [2 * model.latent_size]
    _assert_only_box_changed(image, results[0].image, box)

    with pytest.raises(InputError, match="resolution 60 must be a positive multiple"):
        generate(model, token, [GenerationRequest(image, box, 0)], replace(FAST, resolution=60))
