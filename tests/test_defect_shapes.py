"""Stage 2 painting a real defect's outline inside its box instead of the whole box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anogen.data.box import Box
from anogen.data.generated import read_generated_set
from anogen.data.imageio import read_image, write_image
from anogen.diffusion.config import GenerateConfig
from anogen.diffusion.shapes import defect_outlines, fit_outline
from anogen.errors import InputError


def _scratch_mask(height: int = 64, width: int = 64) -> np.ndarray:
    """A thin diagonal scratch: one pixel wide, about 40 long."""
    mask = np.zeros((height, width), bool)
    for i in range(40):
        mask[10 + i, 12 + i // 2] = True
    return mask


def test_an_outline_is_cut_to_its_defect_and_an_empty_mask_is_refused() -> None:
    [outline] = defect_outlines([_scratch_mask()])
    assert outline.shape == (40, 20) and outline.sum() == 40
    with pytest.raises(InputError, match="empty"):
        defect_outlines([_scratch_mask(), np.zeros((64, 64), bool)])


def test_a_fitted_outline_stays_in_its_box_covers_part_of_it_and_keeps_a_thin_scratch() -> None:
    [outline] = defect_outlines([_scratch_mask()])
    box = Box(30, 5, 40, 25)  # smaller than the outline: it shrinks
    shapes = [fit_outline(outline, box, 64, 64, np.random.default_rng(seed)) for seed in range(8)]
    inside = box.to_mask(64, 64)
    for shape in shapes:
        assert shape.shape == (64, 64) and not (shape & ~inside).any()
        assert 0.05 <= shape[inside].mean() < 0.6  # a thin line, not the whole box
        assert shape[5:25].any(axis=1).all()  # unbroken from the box's top to its bottom
    assert len({shape.tobytes() for shape in shapes}) > 1  # flipped at random


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from anogen.diffusion.embedding_file import LearnedEmbedding, apply_embedding, load_embedding, save_embedding
    from anogen.diffusion.models import load_model
    from anogen.diffusion.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("shapes")
    model = load_model(build_tiny_model(root / "model", "sd1", inpainting=True), device="cpu")
    vector = torch.randn(model.token_width, generator=torch.Generator().manual_seed(0))
    embedding = save_embedding(root / "scratch.safetensors", LearnedEmbedding("<scratch>", vector, family="sd1"))
    apply_embedding(model, load_embedding(embedding))
    rng = np.random.default_rng(0)
    for index in range(2):
        write_image(root / "good" / f"{index}.png", rng.integers(60, 200, (64, 64, 3), dtype=np.uint8))
    return model, embedding, root


def test_only_the_outline_is_painted_and_the_rest_of_the_box_keeps_the_good_image(tiny) -> None:
    from anogen.diffusion.sampler import GenerationRequest, generate

    model, _, _ = tiny
    image = np.random.default_rng(1).integers(60, 200, (64, 64, 3), dtype=np.uint8)
    box = Box(16, 8, 48, 56)
    shape = np.zeros((64, 64), bool)
    shape[20:44, 30:34] = True  # a vertical stripe in the middle of the box
    [whole, shaped] = generate(model, "<scratch>", [GenerationRequest(image, box, 3),
                                                    GenerationRequest(image, box, 3, shape)],
                               GenerateConfig(steps=2, guidance=1.0, crop="off"))
    changed = (shaped.image != image).any(axis=2)
    assert changed[shape].mean() > 0.5  # the outline is painted
    assert not changed[~shape].any()  # the rest of the box, and all outside it, is the good image
    assert (whole.image != image).any(axis=2)[box.y0:box.y1, box.x0:box.x1].mean() > 0.9  # whole box without


def test_a_shape_of_the_wrong_size_or_outside_the_box_is_refused(tiny) -> None:
    from anogen.diffusion.sampler import GenerationRequest, generate

    model, _, _ = tiny
    image = np.zeros((64, 64, 3), np.uint8)
    box = Box(0, 0, 16, 16)
    with pytest.raises(InputError, match="size"):
        generate(model, "<scratch>", [GenerationRequest(image, box, 0, np.ones((32, 32), bool))])
    outside = np.zeros((64, 64), bool)
    outside[40:50, 40:50] = True
    with pytest.raises(InputError, match="inside the box"):
        generate(model, "<scratch>", [GenerationRequest(image, box, 0, outside)])


def test_a_generated_set_paints_outlines_drawn_from_the_given_masks(tiny, tmp_path) -> None:
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set

    model, embedding, root = tiny
    result = generate_set(GenerateSetConfig(model, embedding, root / "good", tmp_path / "set", per_image=2,
                                            generation=GenerateConfig(steps=2, crop="off"),
                                            shapes=[_scratch_mask()]))
    samples = read_generated_set(tmp_path / "set")
    assert len(samples) == len(result.samples) == 4
    for sample in samples:
        assert sample.settings["shape"] == "defect outline"  # provenance
        x0, y0, x1, y1 = sample.box
        changed = (sample.load_image() != read_image(sample.source)).any(axis=2)
        assert changed.any() and not changed[:y0].any() and not changed[y1:].any()
        assert changed[y0:y1, x0:x1].mean() < 0.9  # part of its box, as a scratch covers


def test_a_regenerated_sample_gets_the_mask_of_its_new_outline(tiny, tmp_path) -> None:
    """The app's Regenerate draws a new outline with the new seed; the sample's mask follows."""
    import threading

    from anogen.data.imageio import read_mask, write_mask
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set
    from app.tasks import PreviewTask, RegenerateTask, run_regenerate

    model, embedding, root = tiny
    generate_set(GenerateSetConfig(model, embedding, root / "good", tmp_path / "set", per_image=1,
                                   generation=GenerateConfig(steps=1, crop="off"), shapes=[_scratch_mask()]))
    write_mask(tmp_path / "scratch_mask.png", _scratch_mask())
    [sample, *_] = read_generated_set(tmp_path / "set")
    before = read_mask(sample.mask_path)

    def regenerate(seed: int, shapes):
        preview = PreviewTask(str(root / "model"), embedding, Path(sample.source), tuple(sample.box), seed,
                              GenerateConfig(steps=1, crop="off"), "cpu", shapes)
        result = run_regenerate(RegenerateTask(preview, tmp_path / "set", sample.image_path), lambda _r: None,
                                threading.Event())
        return result, read_generated_set(tmp_path / "set")[0]

    result, again = regenerate(sample.seed + 1, [tmp_path / "scratch_mask.png"])
    mask = read_mask(again.mask_path)
    box = Box(*again.box).to_mask(*mask.shape)
    assert (mask == result.mask).all() and not (mask & ~box).any() and mask.sum() < box.sum()
    assert not (mask == before).all()  # a new seed, a new outline
    assert again.settings["shape"] == "defect outline"

    _, whole = regenerate(sample.seed + 2, None)  # outlines switched off: the whole box again
    assert (read_mask(whole.mask_path) == box).all() and "shape" not in whole.settings
