"""`anogen learn --preset paper`: the reference code's stage-1 setup (scale_lr: 0.005 x 4 = 0.02)."""

from __future__ import annotations

import json

import pytest

from anogen.cli import main
from anogen.diffusion.config import LEARN_PRESETS, LearnConfig
from anogen.diffusion.embedding_file import load_embedding


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from anogen.data.demo import write_demo_dataset
    from anogen.diffusion.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("presets")
    model = build_tiny_model(root / "model", "sd1")
    write_demo_dataset(root / "demo", categories=["washer"], size=64, train_good=1, test_good=0, test_per_kind=2)
    category = root / "demo" / "washer"
    return model, category / "test" / "scratch", category / "ground_truth" / "scratch"


def test_the_paper_preset_learns_at_the_reference_codes_effective_rate():
    paper = LearnConfig(images=[], masks=[]).with_preset("paper")
    assert (paper.lr, paper.batch_size, paper.scale_lr, paper.effective_lr) == (0.005, 4, True, 0.02)
    assert paper.steps == 6100 and paper.crop_to_defect == "off"
    assert LearnConfig(images=[], masks=[]).effective_lr == 0.005  # the default: the paper's text
    assert LearnConfig(images=[], masks=[], lr=0.001).with_preset("paper").effective_lr == pytest.approx(0.004)
    assert set(LEARN_PRESETS) == {"default", "paper"}


@pytest.mark.parametrize("preset, lr, crop", [("paper", 0.02, "off"), ("default", 0.005, "auto")])
def test_cli_preset_reaches_the_optimiser_and_the_metadata(setup, tmp_path, preset, lr, crop):
    model, images, masks = setup
    out = tmp_path / "scratch.safetensors"
    assert main(["learn", "--model", str(model), "--images", str(images), "--masks", str(masks), "--out", str(out),
                 "--steps", "2", "--device", "cpu", "--quiet", "--preset", preset]) == 0
    metadata = load_embedding(out).metadata
    assert float(metadata["lr"]) == pytest.approx(lr) and float(metadata["base_lr"]) == 0.005
    assert json.loads(metadata["scale_lr"]) is (preset == "paper")
    assert metadata["crop_to_defect"] == crop and metadata["steps"] == "2"  # --steps given: it wins
