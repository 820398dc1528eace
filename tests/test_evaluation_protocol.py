"""Which test images an evaluation scores: content-hash exclusion and the two protocols."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
