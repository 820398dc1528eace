"""`anogen learn` end to end on the demo dataset with a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anogen.cli import main
from anogen.data.imageio import write_mask
from anogen.diffusion.config import LearnConfig
from anogen.diffusion.embedding_file import load_embedding
from anogen.diffusion.learn import learn_embedding
from anogen.diffusion.models import load_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from anogen.data.demo import write_demo_dataset
    from anogen.diffusion.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("learn")
    model = build_tiny_model(root / "model", "sd1")
    write_demo_dataset(root / "demo", categories=["washer"], size=64, train_good=1, test_good=0, test_per_kind=2)
    category = root / "demo" / "washer"
    images = sorted((category / "test" / "scratch").glob("*.png"))
    masks = sorted((category / "ground_truth" / "scratch").glob("*.png"))
    assert len(images) == len(masks) == 2
    return root, model, category, images, masks


def learn_args(model, images, masks, out, *extra):
    return ["learn", "--model", str(model), "--images", *map(str, images), "--masks", *map(str, masks),
            "--out", str(out), "--steps", "3", "--batch-size", "2", "--device", "cpu", "--quiet", *extra]


def test_learn_writes_an_embedding_named_after_the_output(setup, tmp_path, capsys):
    _, model, category, _, _ = setup
    out = tmp_path / "scratch.safetensors"
    # folders work too: masks are matched by name (MVTec's NAME_mask.png)
    code = main(learn_args(model, [category / "test" / "scratch"], [category / "ground_truth" / "scratch"], out,
                           "--seed", "7"))
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    embedding = load_embedding(out)
    assert embedding.token == "<scratch>"
    assert embedding.metadata["seed"] == "7" and embedding.metadata["steps"] == "3"
    assert len(json.loads(embedding.metadata["shots"])) == 2
    assert len(embedding.loss_curve) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch.safetensors"]  # no checkpoint, no temp file


def test_resume_continues_a_checkpointed_run(setup, tmp_path):
    _, model, _, images, masks = setup
    out = tmp_path / "scratch.safetensors"
    config = LearnConfig(images=images, masks=masks, token="<scratch>", steps=4, batch_size=2, seed=0)
    whole = learn_embedding(load_model(model, device="cpu"), config)

    # a run interrupted after 2 steps left its checkpoint next to the output
    checkpoint = tmp_path / "scratch.checkpoint.safetensors"
    learn_embedding(load_model(model, device="cpu"),
                    LearnConfig(**{**config.__dict__, "steps": 2, "checkpoint_path": checkpoint}))
    assert checkpoint.is_file()

    args = learn_args(model, images, masks, out, "--resume")
    args[args.index("--steps") + 1] = "4"
    assert main(args) == 0
    assert torch.equal(load_embedding(out).vector, whole.vector)
    assert not checkpoint.exists()


def test_user_mistakes_exit_2_with_one_line(setup, tmp_path, capsys):
    _, model, _, images, masks = setup
    empty = tmp_path / "empty_mask.png"
    write_mask(empty, np.zeros((64, 64), bool))
    cases = [
        (learn_args(model, images, [masks[0], empty], tmp_path / "a.safetensors"), "no defect pixels"),
        (learn_args(model, images, masks[:1], tmp_path / "b.safetensors"), "2 images but 1 masks"),
        (learn_args(tmp_path / "nowhere", images, masks, tmp_path / "c.safetensors"), "no such"),
        (learn_args(model, images, masks, tmp_path / "d.bin"), "must end in .safetensors"),
        (learn_args(model, images, masks, tmp_path / "e.safetensors", "--resume"), "nothing to resume"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not any(p.suffix == ".safetensors" for p in tmp_path.iterdir())
