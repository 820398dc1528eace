"""Dataset readers (MVTec AD category, plain folders) and the thorough dataset check."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import make_category

from anogen.data.datasets import check_dataset, read_mvtec_category, read_plain_folders
from anogen.data.imageio import read_image, read_mask, write_image, write_mask
from anogen.errors import InputError, JobCancelled
from anogen.jobs import Progress


def test_mvtec_category_records(tmp_path: Path) -> None:
    root = make_category(tmp_path / "widget", train=3, test_good=2, kinds=("scratch", "hole"), per_kind=2)
    (root / "train" / "good" / "notes.txt").write_text("not an image")
    (root / "train" / "good" / ".hidden.png").write_bytes(b"")
    (root / "ground_truth" / "hole" / "001_mask.png").unlink()  # a missing mask is not fatal
    category = read_mvtec_category(root)

    assert category.name == "widget"
    assert category.defect_kinds == ["hole", "scratch"]
    assert [r.path.name for r in category.train_good] == ["000.png", "001.png", "002.png"]
    assert all(r.split == "train" and r.label == 0 and r.defect_kind == "good" for r in category.train)
    assert len(category.test) == 6 and len(category.test_defective) == 4
    by_name = {(r.defect_kind, r.path.name): r for r in category.test}
    assert by_name[("good", "000.png")].mask_path is None and by_name[("good", "000.png")].label == 0
    scratch = by_name[("scratch", "001.png")]
    assert scratch.label == 1 and scratch.mask_path == root / "ground_truth" / "scratch" / "001_mask.png"
    assert by_name[("hole", "001.png")].mask_path is None
    # The mask pairs with its image: it marks exactly the darkened pixels.
    image, mask = read_image(scratch.path), read_mask(scratch.mask_path)
    assert (image[mask] == 20).all() and mask.sum() == 36


def test_reader_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_mvtec_category(tmp_path / "missing")
    make_category(tmp_path / "data" / "bottle")
    make_category(tmp_path / "data" / "cable")
    with pytest.raises(InputError, match=r"not an MVTec AD category.*bottle, cable"):
        read_mvtec_category(tmp_path / "data")


def test_plain_folders_with_kinds_and_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for index in range(2):
        write_image(tmp_path / "good" / f"g{index}.jpg", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    write_image(tmp_path / "defects" / "a.png", np.zeros((20, 30, 3), np.uint8))
    write_image(tmp_path / "defects" / "dent" / "b.png", np.zeros((20, 30, 3), np.uint8))
    write_image(tmp_path / "defects" / "dent" / "c.png", np.zeros((20, 30, 3), np.uint8))
    write_mask(tmp_path / "masks" / "a.png", np.ones((20, 30), bool))            # by stem
    write_mask(tmp_path / "masks" / "dent" / "b_mask.png", np.ones((20, 30), bool))  # by <stem>_mask, per kind

    category = read_plain_folders(tmp_path / "good", tmp_path / "defects", tmp_path / "masks")
    assert [r.path.name for r in category.train_good] == ["g0.jpg", "g1.jpg"]
    masks = {r.path.name: (r.defect_kind, r.mask_path) for r in category.test_defective}
    assert masks == {"a.png": ("defect", tmp_path / "masks" / "a.png"),
                     "b.png": ("dent", tmp_path / "masks" / "dent" / "b_mask.png"),
                     "c.png": ("dent", None)}
    assert category.defect_kinds == ["defect", "dent"]

    only_good = read_plain_folders(tmp_path / "good")
    assert only_good.test == [] and len(only_good.train) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no images found"):
        read_plain_folders(tmp_path / "empty")


def test_check_passes_a_sound_dataset_and_reports_progress(tmp_path: Path) -> None:
    root = make_category(tmp_path / "widget", train=3, test_good=2, kinds=("hole",), per_kind=2)
    reports: list[Progress] = []
    report = check_dataset(root, progress=reports.append)
    assert report.ok and report.errors == [] and report.warnings == []
    rows = [(r.split, r.kind, r.images, r.masks) for r in report.rows]
    assert rows == [("train", "good", 3, 0), ("test", "good", 2, 0), ("test", "hole", 2, 2)]
    assert [p.step for p in reports] == list(range(1, 8)) and reports[-1].total == 7
    assert "masks missing" in report.table() and "hole" in report.table()


def test_check_reports_every_problem(tmp_path: Path) -> None:
    root = make_category(tmp_path / "widget", train=3, test_good=1, kinds=("hole", "scratch"), per_kind=2)
    corrupt = root / "train" / "good" / "001.png"
    corrupt.write_bytes(b"garbage, not a png")
    truncated = root / "test" / "hole" / "000.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    mismatched = root / "ground_truth" / "scratch" / "001_mask.png"
    write_mask(mismatched, np.ones((10, 12), bool))
    (root / "ground_truth" / "scratch" / "000_mask.png").unlink()
    write_mask(root / "ground_truth" / "hole" / "007_mask.png", np.ones((32, 40), bool))  # orphan

    report = check_dataset(root)
    assert not report.ok
    assert len(report.errors) == 3, report.errors
    assert any(str(corrupt) in e for e in report.errors)
    assert any(str(truncated) in e for e in report.errors)
    assert any(str(mismatched) in e and "12x10" in e and "40x32" in e for e in report.errors)
    assert any("000.png: no ground-truth mask" in w for w in report.warnings)
    assert any("007_mask.png: mask without a matching test image" in w for w in report.warnings)
    rows = {(r.split, r.kind): r for r in report.rows}
    assert rows[("train", "good")].unreadable == 1
    assert rows[("test", "hole")].unreadable == 1
    assert rows[("test", "scratch")].size_mismatches == 1 and rows[("test", "scratch")].masks_missing == 1


def test_check_walks_every_category_and_can_be_cancelled(tmp_path: Path) -> None:
    make_category(tmp_path / "a", kinds=("hole",))
    make_category(tmp_path / "b", kinds=("dent",))
    report = check_dataset(tmp_path)
    assert {r.category for r in report.rows} == {"a", "b"} and report.ok
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobCancelled):
        check_dataset(tmp_path, cancel=cancel)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="no MVTec AD category"):
        check_dataset(tmp_path / "nothing")


def test_empty_training_folder_is_an_error(tmp_path: Path) -> None:
    root = make_category(tmp_path / "widget", train=0)
    report = check_dataset(root)
    assert not report.ok and any("train/good holds no images" in e for e in report.errors)
