"""`anogen generate` end to end on a small demo-like folder with a tiny model."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter

import numpy as np
import pytest

from anogen.cli import main
from anogen.data.box import Box
from anogen.data.generated import read_generated_set
from anogen.data.imageio import read_image, write_image
from anogen.diffusion.config import GenerateConfig
from anogen.errors import JobCancelled


def _save_embedding(path, width, token="<scratch>"):
    import torch

    from anogen.diffusion.embedding_file import LearnedEmbedding, save_embedding

    vector = torch.randn(width, generator=torch.Generator().manual_seed(1))
    return save_embedding(path, LearnedEmbedding(token=token, vector=vector, family="sd1"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from anogen.diffusion.tiny import TINY_TEXT_WIDTH, build_tiny_model

    root = tmp_path_factory.mktemp("generate")
    model = build_tiny_model(root / "model", "sd1")
    embedding = _save_embedding(root / "scratch.safetensors", TINY_TEXT_WIDTH)
    try:
        from anogen.data.demo import write_demo_dataset

        write_demo_dataset(root / "demo", categories=["washer"], size=64, train_good=3, test_good=0,
                           test_per_kind=0)
        normals = root / "demo" / "washer" / "train" / "good"
    except ImportError:  # the demo dataset module is optional for this test
        normals = root / "good"
        for i in range(3):
            write_image(normals / f"{i:03d}.png",
                        np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return root, model, embedding, normals


def test_generate_writes_a_complete_set(setup, capsys):
    root, model, embedding, normals = setup
    out = root / "set"
    code = main(["generate", "--model", str(model), "--embedding", str(embedding), "--normals", str(normals),
                 "--out", str(out), "--steps", "2", "--per-image", "4", "--seed", "3", "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    assert "12 images with token <scratch>" in captured.out
    assert "generate" in captured.err and "100%" in captured.err  # the tqdm bar

    samples = read_generated_set(out)
    assert len(samples) == 12
    digest = hashlib.sha256(embedding.read_bytes()).hexdigest()
    assert {(s.defect_kind, s.steps, s.guidance, s.embedding_hash, s.status) for s in samples} == {
        ("scratch", 2, 10.0, digest, "pending")}  # to review; still used for training unless rejected
    assert all(s.settings == GenerateConfig().image_settings() for s in samples)  # strength, crop, ...
    assert len({s.seed for s in samples}) == 12
    for source, group in _by_source(samples).items():
        assert len(group) == 4
        assert sorted(Counter(s.box for s in group).values()) == [2, 2]  # 2 boxes x 2 samples
        good = read_image(source)
        for sample in group:
            image, box = sample.load_image(), Box(*sample.box)
            changed = (image != good).any(axis=2)
            assert not changed[~box.to_mask(*good.shape[:2])].any()
            assert changed.any()
            assert (sample.load_mask() == box.to_mask(*good.shape[:2])).all()


def test_shapes_paint_a_real_defect_outline_in_each_box(setup, tmp_path, capsys):
    from anogen.data.imageio import write_mask

    root, model, embedding, normals = setup
    masks = tmp_path / "masks"
    scratch = np.zeros((64, 64), bool)
    scratch[8:40, 20:22] = True  # a thin vertical scratch
    write_mask(masks / "scratch_mask.png", scratch)
    base = ["generate", "--model", str(model), "--embedding", str(embedding), "--normals", str(normals),
            "--steps", "2", "--per-image", "2", "--device", "cpu", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "set"), "--shapes", str(masks)]) == 0
    samples = read_generated_set(tmp_path / "set")
    assert samples and all(s.settings["shape"] == "defect outline" for s in samples)
    for sample in samples:
        box = Box(*sample.box)
        changed = (sample.load_image() != read_image(sample.source)).any(axis=2)
        assert changed.any() and not changed[~box.to_mask(64, 64)].any()
        assert changed[box.y0:box.y1, box.x0:box.x1].mean() < 0.8  # a scratch, not the whole box
        mask = sample.load_mask()  # the label: the painted outline, inside the box
        assert not (changed & ~mask).any() and not (mask & ~box.to_mask(64, 64)).any()
        assert mask.sum() < box.to_mask(64, 64).sum()

    write_mask(masks / "empty_mask.png", np.zeros((64, 64), bool))
    assert main(base + ["--out", str(tmp_path / "bad"), "--shapes", str(masks)]) == 2
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _by_source(samples):
    groups = {}
    for sample in samples:
        groups.setdefault(sample.source, []).append(sample)
    return groups


def test_generate_uses_given_boxes_and_is_reproducible(setup):
    root, model, embedding, normals = setup
    name = sorted(p.name for p in normals.iterdir())[0]
    boxes_file = root / "boxes.json"
    boxes_file.write_text(json.dumps({name: [[8, 8, 24, 20]]}))
    outputs = []
    for run in ("a", "b"):
        out = root / f"given_{run}"
        assert main(["generate", "--model", str(model), "--embedding", str(embedding), "--normals", str(normals),
                     "--out", str(out), "--steps", "2", "--per-image", "2", "--boxes", str(boxes_file),
                     "--quiet"]) == 0
        outputs.append(read_generated_set(out))
    first, second = outputs
    assert [s.box for s in first] == [(8, 8, 24, 20)] * 2  # only the listed image, its one box
    for a, b in zip(first, second):
        assert a.seed == b.seed
        np.testing.assert_array_equal(a.load_image(), b.load_image())


def test_a_rotated_box_gives_a_turned_box_mask_and_its_bounds(setup):
    root, model, embedding, normals = setup
    name = sorted(p.name for p in normals.iterdir())[0]
    boxes_file = root / "rotated_boxes.json"
    boxes_file.write_text(json.dumps({name: [[8, 8, 24, 40, 30.0]]}))
    out = root / "rotated"
    assert main(["generate", "--model", str(model), "--embedding", str(embedding), "--normals", str(normals),
                 "--out", str(out), "--steps", "2", "--per-image", "1", "--boxes", str(boxes_file), "--quiet"]) == 0
    [sample] = read_generated_set(out)
    box = Box(8, 8, 24, 40, 30.0)
    good = read_image(normals / name)
    assert sample.box == tuple(box.bounds.to_list())
    np.testing.assert_array_equal(sample.load_mask(), box.to_mask(*good.shape[:2]))
    assert not (sample.load_image() != good).any(axis=2)[~sample.load_mask()].any()


def test_bad_inputs_exit_2_and_leave_nothing(setup, tmp_path, capsys):
    from anogen.diffusion.tiny import TINY_TEXT_WIDTH

    root, model, embedding, normals = setup
    wrong = _save_embedding(tmp_path / "wide.safetensors", TINY_TEXT_WIDTH * 2)
    out = tmp_path / "out"
    base = ["generate", "--model", str(model), "--normals", str(normals), "--out", str(out), "--steps", "1",
            "--quiet"]
    assert main(base + ["--embedding", str(wrong)]) == 2
    assert f"{TINY_TEXT_WIDTH * 2}-d tokens" in capsys.readouterr().err

    name = sorted(p.name for p in normals.iterdir())[0]
    off = tmp_path / "off.json"
    off.write_text(json.dumps({name: [[50, 50, 90, 60]]}))
    assert main(base + ["--embedding", str(embedding), "--boxes", str(off)]) == 2
    assert "off the 64x64 image" in capsys.readouterr().err

    assert main(base + ["--embedding", str(tmp_path / "missing.safetensors")]) == 2
    assert "embedding file not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["off.json", "wide.safetensors"]


def test_cancel_within_a_step_leaves_no_folder(setup, tmp_path):
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set

    root, model, embedding, normals = setup
    cancel = threading.Event()
    steps = []

    def progress(report):
        steps.append(report.step)
        cancel.set()

    with pytest.raises(JobCancelled):
        generate_set(GenerateSetConfig(model, embedding, normals, tmp_path / "set", generation=GenerateConfig(steps=3),
                                       device="cpu"), progress, cancel)
    assert steps == [1]
    assert list(tmp_path.iterdir()) == []


def test_a_set_is_painted_at_the_resolution_its_embedding_was_learned_at(setup, tmp_path):
    """Stage 2 paints at the scale stage 1 learned the defect at, unless told otherwise."""
    import torch

    from anogen.diffusion.embedding_file import LearnedEmbedding, save_embedding
    from anogen.diffusion.models import load_model
    from anogen.diffusion.sampler import GenerateSetConfig, generate_set

    root, model_dir, _, normals = setup
    model = load_model(model_dir, device="cpu")
    learned_at = 2 * model.resolution
    vector = torch.randn(model.token_width, generator=torch.Generator().manual_seed(2))
    embedding = save_embedding(tmp_path / "big.safetensors", LearnedEmbedding(
        token="<big>", vector=vector, family="sd1", metadata={"resolution": str(learned_at)}))

    sides: list[int] = []
    handle = model.unet.register_forward_hook(lambda _m, args, _out: sides.append(int(args[0].shape[-1])))
    try:
        result = generate_set(GenerateSetConfig(model, embedding, normals, tmp_path / "set", per_image=1,
                                                generation=GenerateConfig(steps=2)))
        assert set(sides) == {learned_at // model.vae_scale_factor}
        assert {s.settings["resolution"] for s in result.samples} == {learned_at}  # provenance

        sides.clear()
        generate_set(GenerateSetConfig(model, embedding, normals, tmp_path / "native", per_image=1,
                                       generation=GenerateConfig(steps=2, resolution=model.resolution)))
        assert set(sides) == {model.latent_size}
    finally:
        handle.remove()

    # The app's one-box preview (and its Regenerate) paints as the set does.
    from app.tasks import PreviewTask, run_preview

    seen: list[int] = []
    original_forward = type(model.unet).forward

    def spy(unet, sample, *args, **kwargs):
        seen.append(int(sample.shape[-1]))
        return original_forward(unet, sample, *args, **kwargs)

    image = sorted(normals.iterdir())[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(model.unet), "forward", spy)
        result = run_preview(PreviewTask(str(model_dir), embedding, image, (8, 8, 30, 30), 0,
                                         GenerateConfig(steps=2), "cpu"), lambda _r: None, threading.Event())
    assert set(seen) == {learned_at // model.vae_scale_factor}
    assert result.settings["resolution"] == learned_at
