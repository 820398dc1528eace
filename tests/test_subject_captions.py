"""A subject in stage 1's captions ("a photo of woven fabric with a <hole>"), and stage 2
painting with the same kind of sentence."""

from __future__ import annotations

import random

import numpy as np
import pytest

from anogen.data.imageio import write_image, write_mask
from anogen.diffusion.captions import CAPTION_TEMPLATES, generation_prompt, sample_caption
from anogen.diffusion.config import GenerateConfig, LearnConfig
from anogen.diffusion.embedding_file import load_embedding, save_embedding
from anogen.diffusion.learn import learn_embedding
from anogen.diffusion.models import load_model
from anogen.diffusion.sampler import GenerateSetConfig, generate_set
from anogen.diffusion.tiny import build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "sd1", "sd1", inpainting=True)


@pytest.fixture(scope="module")
def support(tmp_path_factory):
    folder = tmp_path_factory.mktemp("support")
    image = np.full((64, 64, 3), 150, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 30:34] = True
    image[mask] = 30
    write_image(folder / "hole.png", image)
    write_mask(folder / "hole_mask.png", mask)
    for index in range(2):
        write_image(folder / "good" / f"{index}.png", np.full((64, 64, 3), 150 + index, np.uint8))
    return folder


def _spy_prompts(model, patch) -> list[str]:
    """Every prompt the model's text side sees from now on."""
    seen: list[str] = []
    tokenize = model.tokenize

    def spy(prompts):
        seen.extend(prompts)
        return tokenize(prompts)
    patch.setattr(model, "tokenize", spy)
    return seen


def test_a_subject_is_named_in_every_caption_and_the_paper_captions_stay_without_one() -> None:
    rng = random.Random(0)
    captions = [sample_caption("<hole>", rng, "woven fabric") for _ in range(50)]
    assert all("<hole>" in c and "woven fabric" in c for c in captions)
    assert len(set(captions)) > 3  # varied sentences, not one
    plain = [sample_caption("<hole>", rng) for _ in range(50)]
    assert all(c in {t.format("<hole>") for t in CAPTION_TEMPLATES} for c in plain)
    assert generation_prompt("woven fabric") == "a photo of woven fabric with a {}"
    assert generation_prompt("  ") is None  # no subject: the token alone, as the paper


def test_stage_one_learns_in_sentences_that_name_the_subject_and_records_it(model_dir, support, tmp_path) -> None:
    model = load_model(model_dir, device="cpu")
    config = LearnConfig(images=[support / "hole.png"], masks=[support / "hole_mask.png"], token="<hole>",
                         subject="woven fabric", steps=3, batch_size=2)
    with pytest.MonkeyPatch.context() as patch:
        prompts = _spy_prompts(model, patch)
        result = learn_embedding(model, config)
    assert prompts and all("woven fabric" in p and "<hole>" in p for p in prompts)
    saved = load_embedding(save_embedding(tmp_path / "hole.safetensors", result))
    assert saved.subject == "woven fabric"


def test_stage_two_paints_with_the_learned_subject_unless_given_a_prompt(model_dir, support, tmp_path) -> None:
    model = load_model(model_dir, device="cpu")
    config = LearnConfig(images=[support / "hole.png"], masks=[support / "hole_mask.png"], token="<hole>",
                         subject="woven fabric", steps=2, batch_size=1)
    embedding = save_embedding(tmp_path / "hole.safetensors", learn_embedding(model, config))

    with pytest.MonkeyPatch.context() as patch:
        prompts = _spy_prompts(model, patch)
        result = generate_set(GenerateSetConfig(model, embedding, support / "good", tmp_path / "set", per_image=1,
                                                generation=GenerateConfig(steps=2)))
    assert "a photo of woven fabric with a <hole>" in prompts
    assert {s.settings["prompt"] for s in result.samples} == {"a photo of woven fabric with a {}"}  # provenance

    with pytest.MonkeyPatch.context() as patch:
        prompts = _spy_prompts(model, patch)
        generate_set(GenerateSetConfig(model, embedding, support / "good", tmp_path / "own", per_image=1,
                                       generation=GenerateConfig(steps=2, prompt="a {} seen closely")))
    assert "a <hole> seen closely" in prompts and not any("woven fabric" in p for p in prompts)
