"""The demo dataset: procedurally generated inspection images in MVTec AD layout.

``write_demo_dataset(OUT)`` writes, for each category (a woven ``fabric`` texture and a
steel ``washer`` on a table)::

    OUT/<category>/train/good/000.png ...
    OUT/<category>/test/good/000.png ...
    OUT/<category>/test/<kind>/000.png ...
    OUT/<category>/ground_truth/<kind>/000_mask.png ...

Everything follows from ``seed``: the same call writes the same bytes on every machine,
and no file is downloaded. The pictures themselves come from
:mod:`anogen.data.demo_render`, whose per-sample renderers are re-exported here.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anogen.atomic import staged_directory
from anogen.data.demo_render import (
    BLEMISH_KINDS,
    DEFECT_KINDS,
    DEMO_CATEGORIES,
    MIN_SIZE,
    render_blemish,
    render_defect,
    render_good,
)
from anogen.data.imageio import encode_png
from anogen.errors import InputError
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress

__all__ = [
    "BLEMISH_KINDS",
    "DEFECT_KINDS",
    "DEMO_CATEGORIES",
    "DemoDatasetResult",
    "render_blemish",
    "render_defect",
    "render_good",
    "sample_rng",
    "write_demo_dataset",
]


@dataclass
class DemoDatasetResult:
    """What :func:`write_demo_dataset` wrote."""

    root: Path
    categories: list[Path]
    seed: int = 0
    size: int = 256
    image_count: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> split/kind -> images


def sample_rng(seed: int, category: str, split: str, kind: str, index: int) -> np.random.Generator:
    """The random stream of one sample; independent of which other samples are written.

    Names are hashed with CRC-32 (stable across runs and platforms, unlike ``hash``), so
    asking for fewer categories or images never changes the ones that are written.
    """
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(category.encode()), zlib.crc32(split.encode()),
           zlib.crc32(kind.encode()), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


@dataclass(frozen=True)
class _Task:
    category: str
    split: str  # "train" or "test"
    kind: str  # "good" or a defect kind
    index: int


def _plan(categories: Sequence[str], train_good: int, test_good: int, test_per_kind: int) -> list[_Task]:
    tasks: list[_Task] = []
    for category in categories:
        tasks += [_Task(category, "train", "good", i) for i in range(train_good)]
        tasks += [_Task(category, "test", "good", i) for i in range(test_good)]
        for kind in DEFECT_KINDS[category]:
            tasks += [_Task(category, "test", kind, i) for i in range(test_per_kind)]
    return tasks


def _validate(categories: Sequence[str], size: int, counts: dict[str, int]) -> list[str]:
    if isinstance(categories, str):
        categories = [categories]
    chosen = list(dict.fromkeys(categories))  # keep order, drop repeats
    if not chosen:
        raise InputError("no demo category chosen; expected one or more of " + ", ".join(DEMO_CATEGORIES))
    for category in chosen:
        if category not in DEMO_CATEGORIES:
            raise InputError(f"unknown demo category '{category}'; expected one of {', '.join(DEMO_CATEGORIES)}")
    if not isinstance(size, int) or size < MIN_SIZE or size > 4096:
        raise InputError(f"demo image size {size!r} is out of range; use {MIN_SIZE}..4096 px")
    for name, value in counts.items():
        if not isinstance(value, int) or value < 0:
            raise InputError(f"{name} must be a whole number >= 0, got {value!r}")
    if counts["train_good"] < 1:
        raise InputError("train_good must be at least 1: a detector needs good training images")
    return chosen


def write_demo_dataset(
    out: Path,
    *,
    categories: Sequence[str] = DEMO_CATEGORIES,
    size: int = 256,
    seed: int = 0,
    train_good: int = 40,
    test_good: int = 12,
    test_per_kind: int = 8,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> DemoDatasetResult:
    """Write the demo dataset under ``out`` (one MVTec AD category folder per category).

    All or nothing: every category is built in a hidden staging folder and moved into
    place only when all of them are complete, so a cancel or an error leaves ``out`` as
    it was. An existing category folder of the same name is replaced.
    """
    out = Path(out)
    chosen = _validate(categories, size, {"train_good": train_good, "test_good": test_good,
                                          "test_per_kind": test_per_kind})
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    report = progress or no_progress
    tasks = _plan(chosen, train_good, test_good, test_per_kind)
    counts: dict[str, dict[str, int]] = {c: {} for c in chosen}

    # One staging folder per category, all committed together when the block ends cleanly.
    with contextlib.ExitStack() as stack:
        staging = {c: stack.enter_context(staged_directory(out / c)) for c in chosen}
        for folder in staging.values():
            folder.chmod(0o755)  # mkdtemp makes it private; the dataset is ordinary data
        check_cancel(cancel)
        for step, task in enumerate(tasks):
            check_cancel(cancel)
            _write_sample(staging[task.category], task, seed, size)
            bucket = f"{task.split}/{task.kind}"
            counts[task.category][bucket] = counts[task.category].get(bucket, 0) + 1
            report(Progress(step + 1, len(tasks), f"{task.category} {bucket}"))
        check_cancel(cancel)

    return DemoDatasetResult(root=out, categories=[out / c for c in chosen], seed=seed, size=size,
                             image_count=len(tasks), counts=counts)


def _write_sample(root: Path, task: _Task, seed: int, size: int) -> None:
    # Plain writes are enough inside a staging folder: the folder itself is moved into
    # place atomically only after every file is complete.
    rng = sample_rng(seed, task.category, task.split, task.kind, task.index)
    stem = f"{task.index:03d}"
    image_dir = root / task.split / task.kind
    image_dir.mkdir(parents=True, exist_ok=True)
    if task.kind == "good":
        image, _ = render_good(task.category, rng, size)
        (image_dir / f"{stem}.png").write_bytes(encode_png(image))
        return
    image, mask = render_defect(task.category, task.kind, rng, size)
    (image_dir / f"{stem}.png").write_bytes(encode_png(image))
    mask_dir = root / "ground_truth" / task.kind
    mask_dir.mkdir(parents=True, exist_ok=True)
    (mask_dir / f"{stem}_mask.png").write_bytes(encode_png(mask))
