"""Issue 15, items 15-22: bad input is refused with one line (exit 2) instead of being
accepted silently, and no command starts work without a bound.

Each test fails on the code before the fix: a NaN embedding made black boxes, a huge
--feather left boxes unchanged, masks of the wrong size were resized, a box off its
image was trained on, a resumed learn recorded the wrong step count, a huge
--resolution was OOM-killed, a million boxes per image ran for minutes and a missing
ground-truth mask could not fail ``dataset check``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli_helpers import one_line_error
from _data_helpers import TINY_DRAEM, TINY_DRAEM_ARGS

from anogen.cli import main
from anogen.data.generated import read_generated_set
from anogen.data.imageio import read_image


@pytest.fixture(scope="module")
def diffusion(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, an embedding that fits it, and two good images."""
    from _data_helpers import make_tiny_diffusion

    return make_tiny_diffusion(tmp_path_factory.mktemp("diffusion"), train_good=2)


def _generate_argv(diffusion: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(diffusion["model"]), "--embedding", str(diffusion["embedding"]),
            "--normals", str(diffusion["normals"]), "--steps", "1", "--per-image", "2", "--device", "cpu",
            "--quiet", "--out", str(out), *extra]


# ----------------------------------------------------------------------------- item 15
def test_a_nan_embedding_is_refused_on_load(diffusion, tmp_path, capsys):
    from safetensors.torch import save_file

    from anogen.diffusion.embedding_file import load_embedding
    from anogen.diffusion.tiny import TINY_TEXT_WIDTH
    from anogen.errors import InputError

    broken = tmp_path / "nan.safetensors"
    vector = torch.zeros(TINY_TEXT_WIDTH)
    vector[3] = float("nan")
    save_file({"<scratch>": vector}, str(broken), metadata={"format": "anogen-embedding"})
    with pytest.raises(InputError, match="NaN"):
        load_embedding(broken)

    out = tmp_path / "set"
    argv = _generate_argv({**diffusion, "embedding": broken}, out)
    assert main(argv) == 2
    one_line_error(capsys, str(broken), "NaN")
    assert not out.exists()


def test_non_finite_generated_pixels_are_refused_not_written(diffusion, tmp_path):
    from anogen.diffusion.config import GenerateConfig
    from anogen.diffusion.models import load_model
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set
    from anogen.errors import ModelError

    model = load_model(diffusion["model"], device="cpu")
    with torch.no_grad():  # a broken model (e.g. fp16 overflow): its UNet predicts NaN
        model.unet.conv_out.bias.fill_(float("nan"))
    out = tmp_path / "set"
    with pytest.raises(ModelError, match="NaN or infinite"):
        generate_set(GenerateSetConfig(model, diffusion["embedding"], diffusion["normals"], out, per_image=1,
                                       generation=GenerateConfig(steps=1)))
    assert not out.exists()


# ----------------------------------------------------------------------------- item 16
def test_a_huge_feather_is_bounded_by_the_box(diffusion, tmp_path, capsys):
    out = tmp_path / "set"
    assert main(_generate_argv(diffusion, out, "--feather", "1000000000")) == 0
    capsys.readouterr()
    samples = read_generated_set(out)
    assert samples
    for sample in samples:
        x0, y0, x1, y1 = sample.box
        source = read_image(diffusion["normals"] / Path(sample.source).name)
        generated = sample.load_image()
        assert not np.array_equal(generated[y0:y1, x0:x1], source[y0:y1, x0:x1])


def test_feather_weights_reach_one_in_the_middle_of_any_box():
    from anogen.diffusion.sampler import feather_weights

    for height, width in [(1, 1), (2, 7), (5, 5), (6, 9), (31, 40)]:
        weights = feather_weights(height, width, 10**9)
        assert weights.max() == 1.0, (height, width)


def test_a_sample_whose_box_did_not_change_is_never_written(diffusion, tmp_path, monkeypatch, caplog):
    from anogen.diffusion import sampler
    from anogen.diffusion.config import GenerateConfig
    from anogen.errors import ModelError

    real = sampler.composite
    calls = {"n": 0}

    def sometimes_unchanged(source, generated_crop, crop, box, feather=0, shape=None):
        calls["n"] += 1
        return source.copy() if calls["n"] % 2 else real(source, generated_crop, crop, box, feather, shape)

    monkeypatch.setattr(sampler, "composite", sometimes_unchanged)
    out = tmp_path / "set"
    result = sampler.generate_set(sampler.GenerateSetConfig(
        diffusion["model"], diffusion["embedding"], diffusion["normals"], out, per_image=2,
        generation=GenerateConfig(steps=1), device="cpu"))
    assert len(result.samples) == 2 and len(read_generated_set(out)) == 2  # 4 made, 2 unchanged dropped
    assert "identical to the good image" in caplog.text

    monkeypatch.setattr(sampler, "composite", lambda source, *args, **kwargs: source.copy())
    empty = tmp_path / "empty"
    with pytest.raises(ModelError, match="changed its box"):
        sampler.generate_set(sampler.GenerateSetConfig(
            diffusion["model"], diffusion["embedding"], diffusion["normals"], empty, per_image=1,
            generation=GenerateConfig(steps=1), device="cpu"))
    assert not empty.exists()


# ----------------------------------------------------------------------------- item 17


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    from _data_helpers import make_category

    return make_category(tmp_path_factory.mktemp("data") / "cat", size=(32, 40), train=4, per_kind=2)


@pytest.fixture(scope="module")
def detector(category, tmp_path_factory) -> Path:
    from anogen.detection.train import train
    from anogen.detection.train_config import TrainConfig

    out = tmp_path_factory.mktemp("run") / "draem"
    train(TrainConfig(data_dir=category, detector="draem", out_dir=out, steps=2, overrides=dict(TINY_DRAEM),
                      device="cpu"))
    return out


def _with_small_masks(category: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``category`` whose ground-truth masks are half their images' size."""
    from anogen.data.imageio import read_mask, write_mask

    copy = tmp_path / "cat"
    shutil.copytree(category, copy)
    masks = sorted((copy / "ground_truth").rglob("*_mask.png"))
    for path in masks:
        write_mask(path, read_mask(path)[::2, ::2])
    return copy, masks[0]


SMALL_MASK_MESSAGE = "mask is 20x16 (WxH) but the image"


def test_train_refuses_a_mask_of_another_size(category, tmp_path, capsys):
    data, _ = _with_small_masks(category, tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--detector", "draem", "--steps", "1", "--device", "cpu", "--quiet",
                 *TINY_DRAEM_ARGS, "--out", str(out)]) == 2
    line = one_line_error(capsys, SMALL_MASK_MESSAGE, "_mask.png")
    assert str(data / "ground_truth") in line
    assert not out.exists()


def test_evaluate_refuses_a_mask_of_another_size(category, detector, tmp_path, capsys):
    data, _ = _with_small_masks(category, tmp_path)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--data", str(data), "--detector-dir", str(detector), "--device", "cpu", "--quiet",
                 "--json", str(out)]) == 2
    one_line_error(capsys, SMALL_MASK_MESSAGE, str(data / "ground_truth"))
    assert not out.exists()
    # The same dataset with masks of the right size evaluates.
    assert main(["evaluate", "--data", str(category), "--detector-dir", str(detector), "--device", "cpu",
                 "--quiet", "--json", str(out)]) == 0
    capsys.readouterr()


def test_learn_train_and_evaluate_say_the_same_about_a_small_mask(category, tmp_path):
    """One reader, one message: ``learn`` refused such masks already."""
    from anogen.data.datasets import read_ground_truth, read_mvtec_category
    from anogen.data.imageio import read_image_and_mask
    from anogen.errors import InputError

    data, small = _with_small_masks(category, tmp_path)
    record = next(r for r in read_mvtec_category(data).test if r.mask_path == small)
    with pytest.raises(InputError) as from_dataset:
        read_ground_truth(record)
    with pytest.raises(InputError) as from_learn:
        read_image_and_mask(record.path, small)
    assert str(from_dataset.value) == str(from_learn.value)


# ----------------------------------------------------------------------------- item 18
def _generated_set(category: Path, out: Path, box: list[int]) -> Path:
    """A one-sample generated set on the category's first good image, its manifest box
    replaced by ``box`` (the image and box mask stay as written)."""
    from anogen.data.generated import MANIFEST_NAME, GeneratedSetWriter

    source = sorted((category / "train" / "good").glob("*.png"))[0]
    with GeneratedSetWriter(out) as writer:
        for index in range(2):
            writer.add(read_image(source), box=[2, 2, 12, 10], source=str(source), defect_kind="scratch", seed=index,
                       model="tiny", embedding_hash="0" * 64, steps=1, guidance=1.0, id=f"s{index}")
    manifest = out / MANIFEST_NAME
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace('"box": [2, 2, 12, 10]', f'"box": {box}')
    manifest.write_text("\n".join(lines) + "\n")
    return out


def test_a_generated_box_outside_its_image_is_refused_naming_the_line(category, tmp_path, capsys):
    from anogen.errors import InputError

    generated = _generated_set(category, tmp_path / "set", [20, 20, 90, 90])  # the images are 40x32
    with pytest.raises(InputError, match=r"line 2: box \[20, 20, 90, 90\] lies outside its 40x32 image"):
        read_generated_set(generated)
    out = tmp_path / "run"
    assert main(["train", "--data", str(category), "--detector", "draem", "--steps", "1", "--device", "cpu",
                 "--quiet", *TINY_DRAEM_ARGS, "--generated", str(generated), "--out", str(out)]) == 2
    one_line_error(capsys, "manifest.jsonl", "line 2", "outside its 40x32 image")
    assert not out.exists()


def test_a_box_touching_the_image_edge_is_accepted(category, tmp_path):
    generated = _generated_set(category, tmp_path / "set", [0, 0, 40, 32])
    assert [s.box for s in read_generated_set(generated)] == [(2, 2, 12, 10), (0, 0, 40, 32)]


# ----------------------------------------------------------------------------- item 19
@pytest.fixture(scope="module")
def support(diffusion, tmp_path_factory) -> dict[str, list[Path]]:
    from anogen.data.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("support")
    write_demo_dataset(root, categories=("washer",), size=64, train_good=1, test_good=0, test_per_kind=2)
    category = root / "washer"
    return {"images": sorted((category / "test" / "scratch").glob("*.png")),
            "masks": sorted((category / "ground_truth" / "scratch").glob("*.png"))}


def _learn_argv(diffusion, support, out: Path, *extra: str) -> list[str]:
    return ["learn", "--model", str(diffusion["model"]), "--images", *map(str, support["images"]),
            "--masks", *map(str, support["masks"]), "--out", str(out), "--batch-size", "2", "--device", "cpu",
            "--quiet", *extra]


def test_resume_from_a_checkpoint_past_steps_is_refused(diffusion, support, tmp_path, capsys):
    from anogen.diffusion.config import LearnConfig
    from anogen.diffusion.embedding_file import load_embedding
    from anogen.diffusion.learn import learn_embedding
    from anogen.diffusion.models import load_model
    from anogen.errors import InputError

    out = tmp_path / "scratch.safetensors"
    checkpoint = tmp_path / "scratch.checkpoint.safetensors"
    config = LearnConfig(images=support["images"], masks=support["masks"], token="<scratch>", steps=4, batch_size=2,
                         checkpoint_path=checkpoint)
    learn_embedding(load_model(diffusion["model"], device="cpu"), config)  # a checkpoint at step 4
    before = checkpoint.read_bytes()

    assert main(_learn_argv(diffusion, support, out, "--resume", "--steps", "2")) == 2
    one_line_error(capsys, str(checkpoint), "step 4", "--steps 4")
    assert not out.exists() and checkpoint.read_bytes() == before  # nothing written, the checkpoint kept
    with pytest.raises(InputError, match="already at step 4"):  # the library refuses as well (the app)
        learn_embedding(load_model(diffusion["model"], device="cpu"),
                        LearnConfig(**{**config.__dict__, "steps": 2, "resume_from": checkpoint}))

    # Resuming to the checkpoint's own step or beyond records the truth.
    assert main(_learn_argv(diffusion, support, out, "--resume", "--steps", "5")) == 0
    capsys.readouterr()
    learned = load_embedding(out)
    assert learned.metadata["steps"] == "5" and len(learned.loss_curve) == 5


# ----------------------------------------------------------------------------- item 20
def _run_limited(argv: list[str], limit_bytes: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``anogen ARGV`` in a child process whose address space is capped, so a command
    that tries to allocate far too much fails there instead of taking the machine down."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    env = {**os.environ, "ANOGEN_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "anogen", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, preexec_fn=cap, timeout=300)


def test_learn_refuses_a_resolution_that_cannot_fit(diffusion, support, tmp_path):
    out = tmp_path / "scratch.safetensors"
    result = _run_limited(_learn_argv(diffusion, support, out, "--steps", "1", "--resolution", "1048576"),
                          6 << 30, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("anogen: error: learning at 1048576 px needs at least"), line
    assert "TB of memory (estimate) but this machine has 6.4 GB" in line and "--resolution" in line
    assert not out.exists()


def test_the_memory_estimate_lets_ordinary_runs_through(diffusion):
    from anogen.diffusion.models import load_model
    from anogen.errors import InputError
    from anogen.memory import check_learn_memory, machine_memory

    model = load_model(diffusion["model"], device="cpu")
    assert machine_memory() > 1 << 30
    for resolution in (32, 256, 1024):
        check_learn_memory(model, resolution, batch_size=4, shots=5, flip=True)
    with pytest.raises(InputError, match="needs at least"):
        check_learn_memory(model, 1 << 17, batch_size=4, shots=5, flip=True)


# ----------------------------------------------------------------------------- item 21
def test_boxes_bounds_the_boxes_per_image(category, tmp_path):
    out = tmp_path / "boxes"
    argv = [sys.executable, "-m", "anogen", "boxes", "--images", str(category / "train" / "good"), "--quiet",
            "--foreground", "all", "--out", str(out)]
    # Before the bound this ran for hours; a child process with a timeout keeps a
    # regression from hanging the suite.
    result = subprocess.run([*argv, "--per-image", "1000000"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "anogen: error: --per-image must be between 1 and 1000 (each box is placed by trial and written as a "
        "mask file), got 1000000")
    assert not out.exists()
    assert subprocess.run([*argv, "--per-image", "3", "--limit", "1"], capture_output=True, text=True,
                          timeout=120).returncode == 0
    assert len(json.loads((out / "boxes.json").read_text())["boxes"]["000.png"]) == 3


# ----------------------------------------------------------------------------- item 22
def test_dataset_check_names_the_effect_of_a_missing_mask_and_strict_refuses_it(tmp_path, capsys):
    from _data_helpers import make_category

    from anogen.data.imageio import write_mask

    root = make_category(tmp_path / "widget", train=2, kinds=("hole",), per_kind=2)
    (root / "ground_truth" / "hole" / "000_mask.png").unlink()
    write_mask(root / "ground_truth" / "hole" / "001_mask.png", np.zeros((32, 40), bool))

    assert main(["dataset", "check", str(root), "--quiet"]) == 0  # usable, with warnings
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert "000.png: no ground-truth mask" in warnings[0] and "001_mask.png: mask is empty" in warnings[1]
    for line in warnings:
        assert "pixel metrics count every pixel of this defective image as normal" in line

    assert main(["dataset", "check", str(root), "--quiet", "--strict"]) == 2
    one_line_error(capsys, "2 warnings with --strict", "000.png: no ground-truth mask")
    # --strict passes a sound dataset.
    sound = make_category(tmp_path / "sound", train=2, kinds=("hole",), per_kind=2)
    assert main(["dataset", "check", str(sound), "--quiet", "--strict"]) == 0
    capsys.readouterr()
