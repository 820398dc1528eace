"""The procedural demo dataset: layout, mask alignment, determinism, size, cancel."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from anogen.data.demo import (
    BLEMISH_KINDS,
    DEFECT_KINDS,
    DEMO_CATEGORIES,
    render_blemish,
    render_defect,
    render_good,
    write_demo_dataset,
)
from anogen.data.imageio import read_image, read_mask
from anogen.errors import InputError, JobCancelled

SMALL = dict(size=64, train_good=2, test_good=1, test_per_kind=2)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_writes_mvtec_layout_with_a_mask_per_defect_image(tmp_path: Path) -> None:
    result = write_demo_dataset(tmp_path / "demo", **SMALL)
    assert [p.name for p in result.categories] == list(DEMO_CATEGORIES)
    for category in DEMO_CATEGORIES:
        root = tmp_path / "demo" / category
        assert sorted(p.name for p in (root / "train" / "good").iterdir()) == ["000.png", "001.png"]
        assert sorted(p.name for p in (root / "test").iterdir()) == sorted(("good",) + DEFECT_KINDS[category])
        for kind in DEFECT_KINDS[category]:
            images = sorted((root / "test" / kind).glob("*.png"))
            assert [p.name for p in images] == ["000.png", "001.png"]
            for image_path in images:
                mask_path = root / "ground_truth" / kind / f"{image_path.stem}_mask.png"
                image = read_image(image_path)
                mask = read_mask(mask_path, expected_size=image.shape[:2])
                assert image.shape == (64, 64, 3)
                assert mask.any(), f"{mask_path} is empty"
        assert not (root / "ground_truth" / "good").exists()
    assert not [p for p in (tmp_path / "demo").iterdir() if p.name.startswith(".")], "staging folders left behind"


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_defect_changes_exactly_the_masked_pixels(category: str) -> None:
    areas = []
    for kind in DEFECT_KINDS[category]:
        for seed in range(4):
            good, foreground = render_good(category, np.random.default_rng(seed), 128)
            damaged, mask = render_defect(category, kind, np.random.default_rng(seed), 128)
            changed = np.any(good != damaged, axis=2)
            assert mask.any()
            assert not (changed & ~mask).any(), f"{kind}: pixels changed outside the mask"
            # Most of the mask is visibly different (not a mask over untouched pixels).
            strong = np.abs(good.astype(int) - damaged.astype(int)).max(axis=2) >= 8
            assert strong[mask].mean() > 0.5, f"{kind} seed {seed}: mask mostly unchanged"
            assert not (mask & ~foreground).any(), f"{kind}: defect off the part"
            areas.append(int(mask.sum()))
    # Defects vary in size: the largest is several times the smallest.
    assert max(areas) > 3 * min(areas)


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_blemishes_change_only_masked_pixels(category: str) -> None:
    for seed, kind in enumerate(BLEMISH_KINDS):
        good, _ = render_good(category, np.random.default_rng(seed), 96)
        damaged, mask = render_blemish(category, np.random.default_rng(seed), 96, kind=kind)
        changed = np.any(good != damaged, axis=2)
        assert mask.any() and changed.any(), kind
        assert not (changed & ~mask).any(), kind


def test_good_images_vary_and_washer_foreground_is_a_ring() -> None:
    fabric = [render_good("fabric", np.random.default_rng(s), 96)[0].astype(float) for s in range(2)]
    assert np.abs(fabric[0] - fabric[1]).mean() > 5
    washer, ring = render_good("washer", np.random.default_rng(0), 128)
    assert 0.15 < ring.mean() < 0.5
    assert not ring[64, 64] and not ring[0, 0]  # the hole and the background are not metal
    # Metal is brighter than the table it lies on.
    assert washer[ring].mean() > washer[~ring].mean() + 40


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    small = dict(SMALL, categories=("washer",), test_per_kind=1)
    write_demo_dataset(tmp_path / "a", seed=3, **small)
    write_demo_dataset(tmp_path / "b", seed=3, **small)
    write_demo_dataset(tmp_path / "c", seed=4, **small)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a if not name.endswith("_mask.png"))


def test_size_is_selectable(tmp_path: Path) -> None:
    write_demo_dataset(tmp_path / "d", categories=("fabric",), size=48, train_good=1, test_good=0, test_per_kind=1)
    for path in (tmp_path / "d" / "fabric").rglob("*.png"):
        assert read_image(path).shape[:2] == (48, 48), path


def test_cancel_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    cancel = threading.Event()
    reports = []

    def progress(report) -> None:
        reports.append(report)
        if report.step == 5:
            cancel.set()

    with pytest.raises(JobCancelled):
        write_demo_dataset(out, progress=progress, cancel=cancel, **SMALL)
    assert len(reports) == 5
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_rejects_bad_arguments_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="carpet"):
        write_demo_dataset(tmp_path / "x", categories=("carpet",))
    with pytest.raises(InputError, match="size"):
        write_demo_dataset(tmp_path / "x", size=8)
    with pytest.raises(InputError, match="test_good"):
        write_demo_dataset(tmp_path / "x", test_good=-1)
    with pytest.raises(InputError, match="crack"):
        render_defect("fabric", "crack", np.random.default_rng(0), 64)
    assert not (tmp_path / "x").exists()
