"""The paper's ablation knobs: stage 1 without the mask, CutPaste synthesis, generated-only training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import TINY_DRAEM_ARGS

from anogen.cli import main
from anogen.data.demo import write_demo_dataset
from anogen.data.generated import GeneratedSetWriter
from anogen.data.imageio import list_images, read_image
from anogen.detection.cutpaste import CutPasteConfig, CutPasteSynthesizer
from anogen.detection.pipeline import DataPipeline
from anogen.detection.preprocess import resize_image
from anogen.detection.synthesis import SynthesisResult
from anogen.detection.training_data import MixedBatchSampler, load_generated_items
from anogen.errors import InputError


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, categories=("fabric",), size=32, seed=9, train_good=3, test_good=2, test_per_kind=2)
    return root / "fabric"


def generated_set(folder: Path, category: Path, kind: str = "hole", count: int = 2) -> Path:
    with GeneratedSetWriter(folder) as writer:
        for index, source in enumerate(list_images(category / "train" / "good")[:count]):
            image = read_image(source).copy()
            image[8:20, 8:20] = 0
            writer.add(image, box=(6, 6, 22, 22), source=str(source), defect_kind=kind, seed=index,
                       model="hand", embedding_hash="0", steps=0, guidance=0.0)
    return folder


# ----------------------------------------------------------------------------- stage 1 without the mask


def test_stage1_without_the_mask_counts_the_whole_image(tmp_path):
    from anogen.diffusion.config import LearnConfig
    from anogen.diffusion.embedding_file import load_embedding
    from anogen.diffusion.learn import learn_embedding
    from anogen.diffusion.models import load_model
    from anogen.diffusion.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "model", "sd1")
    write_demo_dataset(tmp_path / "demo", categories=["washer"], size=64, train_good=1, test_good=0, test_per_kind=2)
    images = sorted((tmp_path / "demo" / "washer" / "test" / "scratch").glob("*.png"))
    masks = sorted((tmp_path / "demo" / "washer" / "ground_truth" / "scratch").glob("*.png"))
    model = load_model(model_dir, device="cpu")
    config = LearnConfig(images=images, masks=masks, token="<scratch>", steps=1, batch_size=2, seed=0)
    masked = learn_embedding(model, config)
    unmasked = learn_embedding(load_model(model_dir, device="cpu"),
                               LearnConfig(**{**config.__dict__, "use_mask": False}))
    # Same noise and timesteps: with every latent element counted the loss can only grow,
    # and a scratch covers a small part of the image, so it grows a lot.
    assert unmasked.loss_curve[0] > 2 * masked.loss_curve[0]
    assert unmasked.metadata["use_mask"] is False and masked.metadata["use_mask"] is True

    out = tmp_path / "nomask.safetensors"
    assert main(["learn", "--model", str(model_dir), "--images", *map(str, images), "--masks", *map(str, masks),
                 "--out", str(out), "--steps", "1", "--batch-size", "2", "--device", "cpu", "--quiet",
                 "--no-mask"]) == 0
    assert json.loads(load_embedding(out).metadata["use_mask"]) is False


# ----------------------------------------------------------------------------- CutPaste


def test_cutpaste_pastes_a_jittered_patch_of_the_image_inside_its_mask():
    rng = np.random.default_rng(0)
    image = rng.random((64, 48, 3)).astype(np.float32)
    synthesizer = CutPasteSynthesizer(CutPasteConfig(clean_probability=0.0))
    areas = []
    for _ in range(50):
        result = synthesizer.sample(image, rng)
        assert result.has_anomaly
        changed = np.abs(result.image - image).max(axis=-1) > 0
        assert not changed[result.mask == 0].any()  # only the pasted rectangle differs
        ys, xs = np.nonzero(result.mask)
        assert result.mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # a rectangle
        areas.append(result.mask.mean())
    assert 0.015 < min(areas) and max(areas) < 0.16  # 2-15 % of the image (rounded to whole pixels)
    clean = CutPasteSynthesizer(CutPasteConfig(clean_probability=1.0)).sample(image, rng)
    assert not clean.has_anomaly and np.array_equal(clean.image, image)
    with pytest.raises(InputError, match="area_ratio"):
        CutPasteConfig(area_ratio=(0.2, 0.1))


def test_training_with_cutpaste_uses_it_and_records_it(category, tmp_path, monkeypatch):
    from anogen.detection import cutpaste
    from anogen.detection.checkpoint import read_checkpoint_info

    calls = {"n": 0}
    original = cutpaste.CutPasteSynthesizer.sample

    def counted(self, image, rng=None):
        calls["n"] += 1
        return original(self, image, rng)

    monkeypatch.setattr(cutpaste.CutPasteSynthesizer, "sample", counted)
    out = tmp_path / "det"
    assert main(["train", "--data", str(category), "--detector", "draem", "--synthesis", "cutpaste",
                 "--steps", "2", "--device", "cpu", "--quiet", *TINY_DRAEM_ARGS, "--out", str(out)]) == 0
    assert calls["n"] >= 4  # every synthetic sample of both batches
    assert read_checkpoint_info(out, "last").provenance["synthesis"] == "cutpaste"
    with pytest.raises(SystemExit) as refused:
        main(["train", "--data", str(category), "--detector", "draem", "--synthesis", "poisson",
              "--out", str(tmp_path / "x")])
    assert refused.value.code == 2


# ----------------------------------------------------------------------------- generated only


class _Marked:
    def sample(self, image, rng):
        return SynthesisResult(image=image, mask=np.ones(image.shape[:2], np.float32), has_anomaly=True)


def test_mix_zero_draws_only_generated_samples(category, tmp_path):
    items = load_generated_items(generated_set(tmp_path / "gen", category), 32,
                                 good_paths=list_images(category / "train" / "good"))
    good = [resize_image(read_image(p), 32) for p in list_images(category / "train" / "good")]
    recipe = DataPipeline(synthesis_clean_probability=0.5, texture_augmentations=3, generated_clean_probability=0.5)
    arrays = MixedBatchSampler(good, _Marked(), pipeline=recipe, generated=items, mix=0.0).batch_arrays(0, 64)
    assert not (arrays["mask"][:, 0].min(axis=(1, 2)) == 1).any()  # no synthetic (all-ones) sample
    assert 0 < arrays["weak"].sum() < 64  # boxed generated samples and their clean sources
    with pytest.raises(InputError, match="generated"):
        MixedBatchSampler(good, _Marked(), pipeline=recipe, mix=0.0)


def test_generated_only_training_runs_end_to_end(category, tmp_path, capsys):
    from anogen.detection.checkpoint import read_checkpoint_info

    out = tmp_path / "det"
    assert main(["train", "--data", str(category), "--detector", "draem", "--mix", "0",
                 "--generated", str(generated_set(tmp_path / "gen", category)), "--steps", "2", "--device", "cpu",
                 "--quiet", *TINY_DRAEM_ARGS, "--out", str(out)]) == 0
    assert read_checkpoint_info(out, "last").provenance["mix"] == 0.0
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--data", str(category), "--detector-dir", str(out), "--device", "cpu", "--quiet",
                 "--json", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["n_images"] > 0
    capsys.readouterr()
    # Without a generated set, mix 0 would train on nothing: a one-line error, no folder.
    assert main(["train", "--data", str(category), "--detector", "draem", "--mix", "0", "--out",
                 str(tmp_path / "none")]) == 2
    assert "generated" in capsys.readouterr().err and not (tmp_path / "none").exists()
