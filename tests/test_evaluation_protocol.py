"""Which test images an evaluation scores: content-hash exclusion and the two protocols."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _data_helpers import TINY_DRAEM_ARGS

from anogen.data.datasets import read_mvtec_category
from anogen.data.demo import write_demo_dataset
from anogen.data.exclusion import excluded_indices, file_digest
from anogen.errors import InputError


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, categories=("fabric",), size=32, seed=7, train_good=4, test_good=3, test_per_kind=3)
    return root / "fabric"


def test_inference_and_evaluation_do_not_import_training():
    # score_images lives with inference and excluded_indices with the data, so evaluating
    # never loads the training module (the evaluate <-> train import cycle is gone).
    code = ("import sys; import anogen.detection.evaluate, anogen.detection.infer, anogen.data.exclusion; "
            "print('anogen.detection.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    from anogen.detection import infer, train

    assert hasattr(infer, "score_images") and not hasattr(train, "score_images")


def test_excluded_images_are_recognised_by_content_not_path(category, tmp_path):
    records = list(read_mvtec_category(category).test)
    support = category / "test" / "hole" / "000.png"
    index = next(i for i, r in enumerate(records) if Path(r.path) == support)

    # A copy of the support image elsewhere, or its digest alone, finds it.
    copy = tmp_path / "project" / "support.png"
    copy.parent.mkdir()
    shutil.copy(support, copy)
    assert excluded_indices(records, [copy]) == {index}
    assert excluded_indices(records, digests=[file_digest(support)]) == {index}
    # A copy of the whole dataset: the same image under another root is still excluded.
    moved = shutil.copytree(category, tmp_path / "moved")
    assert excluded_indices(list(read_mvtec_category(moved).test), [support]) == {index}
    # Another dataset whose file has the same relative path but other bytes is not.
    other = tmp_path / "other"
    write_demo_dataset(other, categories=("fabric",), size=32, seed=8, train_good=1, test_good=3, test_per_kind=3)
    assert excluded_indices(list(read_mvtec_category(other / "fabric").test), [support]) == set()
    # A mistyped support path is an error, not an image silently left in the test set.
    with pytest.raises(InputError, match="not found"):
        excluded_indices(records, [tmp_path / "missing.png"])


# ----------------------------------------------------------------------------- protocols


def train_cli(category: Path, out: Path, *extra: str) -> Path:
    from anogen.cli import main

    assert main(["train", "--data", str(category), "--detector", "draem", "--steps", "2", "--validate-every", "1",
                 "--device", "cpu", "--quiet", *TINY_DRAEM_ARGS, "--out", str(out), *extra]) == 0
    return out


def evaluate_cli(category: Path, detector: Path, json_path: Path, *extra: str) -> dict:
    from anogen.cli import main

    assert main(["evaluate", "--data", str(category), "--detector-dir", str(detector), "--device", "cpu",
                 "--quiet", "--json", str(json_path), *extra]) == 0
    return json.loads(json_path.read_text())


def test_holdout_leaves_out_its_validation_images_even_in_a_copy_of_the_dataset(category, tmp_path):
    # The support image lives outside the dataset and is deleted after training: its
    # recorded digest still keeps it out of the test set.
    support = tmp_path / "support.png"
    shutil.copy(category / "test" / "hole" / "001.png", support)
    detector = train_cli(category, tmp_path / "det", "--exclude", str(support))
    support.unlink()
    total = len(read_mvtec_category(category).test)

    here = evaluate_cli(category, detector, tmp_path / "here.json")
    assert here["protocol"] == "holdout" and here["checkpoint"] == "best"
    assert here["n_excluded_support"] == 1 and here["n_excluded_validation"] > 0
    assert here["n_scored"] == here["n_images"] == total - here["n_excluded"]
    assert here["n_excluded"] == here["n_excluded_support"] + here["n_excluded_validation"]

    copy = shutil.copytree(category, tmp_path / "elsewhere" / "fabric")
    there = evaluate_cli(copy, detector, tmp_path / "there.json")
    assert (there["n_excluded_support"], there["n_excluded_validation"]) == (1, here["n_excluded_validation"])
    assert there["image_auroc"] == here["image_auroc"]


def test_paper_protocol_keeps_the_last_checkpoint_and_scores_all_but_the_support_images(category, tmp_path):
    from anogen.detection.checkpoint import read_checkpoint_info

    support = category / "test" / "stain" / "000.png"
    detector = train_cli(category, tmp_path / "det", "--protocol", "paper", "--exclude", str(support))
    best, last = read_checkpoint_info(detector, "best"), read_checkpoint_info(detector, "last")
    assert best.step == last.step == 2 and last.provenance["protocol"] == "paper"
    assert last.validation["protocol"] == "paper"  # the checkpoint's own metrics say how they were made

    metrics = evaluate_cli(category, detector, tmp_path / "m.json")  # the run's protocol by default
    total = len(read_mvtec_category(category).test)
    assert (metrics["protocol"], metrics["checkpoint"]) == ("paper", "last")
    assert (metrics["n_scored"], metrics["n_excluded_support"], metrics["n_excluded_validation"]) == (total - 1, 1, 0)

    # A holdout run scored under the paper protocol: its last checkpoint, its validation images kept.
    holdout = train_cli(category, tmp_path / "holdout")
    paper = evaluate_cli(category, holdout, tmp_path / "p.json", "--protocol", "paper")
    assert (paper["protocol"], paper["checkpoint"], paper["n_scored"], paper["n_excluded"]) == ("paper", "last",
                                                                                                 total, 0)
