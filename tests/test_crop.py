"""One context-crop rule for stage 1 (learning) and stage 2 (generation)."""

from __future__ import annotations

import numpy as np
import pytest

from anogen.data.box import Box
from anogen.data.imageio import write_image, write_mask
from anogen.diffusion.config import GenerateConfig, LearnConfig
from anogen.diffusion.crop import context_window
from anogen.diffusion.learn import prepare_support
from anogen.diffusion.sampler import GenerationRequest, generate
from anogen.errors import InputError


def test_context_window_geometry():
    box = Box(1990, 5, 2040, 45)  # near a corner of a wide image
    crop = context_window(box, 1000, 3000, mode="auto")
    assert crop.width == crop.height == 150
    assert crop.x0 <= box.x0 and crop.y0 == 0 and crop.x1 >= box.x1 and crop.y1 >= box.y1
    full = Box(0, 0, 100, 100)
    assert context_window(Box(10, 10, 30, 30), 100, 100) == full  # 60 px >= half the image: whole image
    assert context_window(Box(10, 10, 30, 30), 100, 100, mode="on") == Box(0, 0, 60, 60)
    assert context_window(Box(10, 10, 12, 12), 100, 100, mode="off") == full
    # The square stops at the image's shorter side and never cuts the box.
    assert context_window(Box(150, 80, 230, 120), 200, 400, mode="on") == Box(90, 0, 290, 200)
    # No square holds a box longer than the shorter side: the whole image.
    assert context_window(Box(10, 10, 310, 60), 200, 400, mode="on") == Box(0, 0, 400, 200)
    for seed in range(50):
        rng = np.random.default_rng(seed)
        height, width = (int(v) for v in rng.integers(40, 300, 2))
        w, h = int(rng.integers(1, width // 2 + 1)), int(rng.integers(1, height // 2 + 1))
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        box = Box(x0, y0, x0 + w, y0 + h)
        crop = context_window(box, height, width, mode="on", context_margin=float(rng.uniform(0, 2)))
        assert crop.x0 <= box.x0 and crop.y0 <= box.y0 and crop.x1 >= box.x1 and crop.y1 >= box.y1
        assert crop.clip(height, width) == crop
        assert crop.width == crop.height or crop == Box(0, 0, width, height)
    with pytest.raises(InputError, match="crop"):
        GenerateConfig(crop="sometimes").validate()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from anogen.diffusion.embedding_file import LearnedEmbedding, apply_embedding
    from anogen.diffusion.models import load_model
    from anogen.diffusion.tiny import build_tiny_model

    model = load_model(build_tiny_model(tmp_path_factory.mktemp("sd1") / "model", "sd1"), device="cpu")
    vector = torch.randn(model.token_width, generator=torch.Generator().manual_seed(0))
    return model, apply_embedding(model, LearnedEmbedding(token="<d>", vector=vector, family=model.family))


def _wide_shot(folder):
    """A 400 x 200 image with an 80 x 40 defect (the case that used to disagree)."""
    image = np.random.default_rng(0).integers(0, 256, (200, 400, 3), dtype=np.uint8)
    mask = np.zeros((200, 400), bool)
    mask[80:120, 150:230] = True
    write_image(folder / "wide.png", image)
    write_mask(folder / "wide_mask.png", mask)
    return image, Box(150, 80, 230, 120), LearnConfig(images=[folder / "wide.png"], masks=[folder / "wide_mask.png"])


@pytest.mark.parametrize("mode", ["on", "auto", "off"])
def test_both_stages_crop_the_same_square(tiny, tmp_path, mode):
    model, token = tiny
    image, box, config = _wide_shot(tmp_path)
    config.crop_to_defect = mode
    [shot] = prepare_support(config, model.resolution)
    [result] = generate(model, token, [GenerationRequest(image, box, 0)], GenerateConfig(steps=1, crop=mode))
    assert shot.crop == tuple(result.crop.to_list())
    if mode == "on":
        assert result.crop == Box(90, 0, 290, 200)  # square: nothing is squashed


def test_the_paper_preset_turns_the_crop_off(tiny, tmp_path):
    model, token = tiny
    image = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    mask = np.zeros((512, 512), bool)
    mask[300:310, 400:420] = True  # small: the default crops around it
    write_image(tmp_path / "small.png", image)
    write_mask(tmp_path / "small_mask.png", mask)
    config = LearnConfig(images=[tmp_path / "small.png"], masks=[tmp_path / "small_mask.png"])
    assert prepare_support(config, model.resolution)[0].crop == (380, 275, 440, 335)
    paper = config.with_preset("paper")
    assert paper.crop_to_defect == "off" and prepare_support(paper, model.resolution)[0].crop == (0, 0, 512, 512)
    assert config.with_preset("default") == config
    assert LearnConfig(images=[], masks=[], crop_to_defect="on").with_preset("paper").crop_to_defect == "on"
    box = Box(400, 300, 420, 310)
    [default, reference] = [generate(model, token, [GenerationRequest(image, box, 0)], c)[0]
                            for c in (GenerateConfig(steps=1), GenerateConfig(steps=1).with_preset("paper"))]
    assert default.crop == Box(380, 275, 440, 335) and reference.crop == Box(0, 0, 512, 512)
    with pytest.raises(InputError, match="unknown preset"):
        GenerateConfig().with_preset("fast")
