"""Dataset readers: an MVTec AD category folder, or plain folders of images.

An MVTec AD category looks like::

    <category>/train/good/*.png                  defect-free training images
    <category>/test/good/*.png                   defect-free test images
    <category>/test/<kind>/*.png                 defective test images, one folder per kind
    <category>/ground_truth/<kind>/<stem>_mask.png   their pixel masks

The readers only list files and pair images with masks; they return typed records and
never open an image, so reading a large dataset is instant. :func:`check_dataset` is the
slow, thorough counterpart: it opens every image and mask and reports every problem.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anogen.data.imageio import list_images, read_image, read_mask
from anogen.errors import InputError
from anogen.jobs import Progress, ProgressFn, check_cancel, no_progress

GOOD = "good"
MASK_SUFFIX = "_mask"
# What a defective test image without defect pixels in its ground truth does to the
# metrics: evaluate scores it with an all-zero mask, so its defect counts as normal.
NO_GROUND_TRUTH_EFFECT = ("pixel metrics count every pixel of this defective image as normal, so its defect "
                          "lowers pixel AUROC/AP/AUPRO (--strict makes this an error)")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset. ``label`` is 0 for good, 1 for defective."""

    path: Path
    label: int
    split: str  # "train" or "test"
    defect_kind: str  # "good" for good images
    mask_path: Path | None = None  # pixel ground truth; None for good images or when missing

    @property
    def is_defective(self) -> bool:
        return self.label == 1


@dataclass
class Category:
    """One category of a dataset: its training and test images."""

    root: Path
    name: str
    train: list[ImageRecord] = field(default_factory=list)
    test: list[ImageRecord] = field(default_factory=list)

    @property
    def defect_kinds(self) -> list[str]:
        """The defect kinds present, sorted, without ``good``."""
        return sorted({r.defect_kind for r in self.train + self.test if r.label == 1})

    @property
    def train_good(self) -> list[ImageRecord]:
        return [r for r in self.train if r.label == 0]

    @property
    def test_good(self) -> list[ImageRecord]:
        return [r for r in self.test if r.label == 0]

    @property
    def test_defective(self) -> list[ImageRecord]:
        return [r for r in self.test if r.label == 1]


# ----------------------------------------------------------------------------- readers

def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class _MaskFinder:
    """Finds the mask of an image by stem; lists each mask folder once."""

    def __init__(self) -> None:
        self._index: dict[Path, dict[str, Path]] = {}

    def _stems(self, folder: Path) -> dict[str, Path]:
        if folder not in self._index:
            by_stem: dict[str, Path] = {}
            for path in list_images(folder) if folder.is_dir() else []:
                by_stem.setdefault(path.stem, path)
            self._index[folder] = by_stem
        return self._index[folder]

    def find(self, folders: list[Path], stem: str) -> Path | None:
        """The mask of image ``stem``: ``<stem>_mask.<ext>`` (MVTec AD) or ``<stem>.<ext>``."""
        for folder in folders:
            stems = self._stems(folder)
            for candidate in (stem + MASK_SUFFIX, stem):
                if candidate in stems:
                    return stems[candidate]
        return None


def _is_category(folder: Path) -> bool:
    return (folder / "train" / GOOD).is_dir()


def find_categories(root: str | os.PathLike) -> list[Path]:
    """``root`` itself when it is a category, otherwise its sub-folders that are categories."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: {'not a folder' if root.exists() else 'folder not found'}")
    if _is_category(root):
        return [root]
    return [folder for folder in _subfolders(root) if _is_category(folder)]


def read_mvtec_category(root: str | os.PathLike) -> Category:
    """Read one MVTec AD category folder. A defective image without a mask gets ``mask_path=None``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    if not _is_category(root):
        inside = [p.name for p in find_categories(root)]
        hint = f"; it holds the categories {', '.join(inside)}: pass one of them" if inside else ""
        raise InputError(f"{root}: not an MVTec AD category (no train/good folder){hint}")

    train = [ImageRecord(path, 0, "train", GOOD) for path in list_images(root / "train" / GOOD)]
    test: list[ImageRecord] = []
    masks = _MaskFinder()
    test_root = root / "test"
    if test_root.is_dir():
        for folder in _subfolders(test_root):
            kind = folder.name
            for path in list_images(folder):
                if kind == GOOD:
                    test.append(ImageRecord(path, 0, "test", GOOD))
                else:
                    mask = masks.find([root / "ground_truth" / kind], path.stem)
                    test.append(ImageRecord(path, 1, "test", kind, mask))
    return Category(root=root, name=root.name, train=train, test=test)


def read_plain_folders(good_dir: str | os.PathLike, defect_dir: str | os.PathLike | None = None,
                       mask_dir: str | os.PathLike | None = None) -> Category:
    """Read plain folders: good images (the train split) and defect images (the test split).

    ``defect_dir`` may hold images directly (kind ``defect``) and/or one sub-folder per
    defect kind. A mask is found in ``mask_dir`` (or ``mask_dir/<kind>``) by the image's
    stem, named ``<stem>.<ext>`` or ``<stem>_mask.<ext>``; without one ``mask_path`` is None.
    """
    good_dir = Path(good_dir)
    train = [ImageRecord(path, 0, "train", GOOD) for path in list_images(good_dir)]
    if not train:
        raise InputError(f"{good_dir}: no images found (expected .png, .jpg, .bmp or .tif files)")
    test: list[ImageRecord] = []
    if defect_dir is not None:
        defect_dir = Path(defect_dir)
        mask_root = Path(mask_dir) if mask_dir is not None else None
        masks = _MaskFinder()
        groups = [("defect", defect_dir)] + [(folder.name, folder) for folder in _subfolders(defect_dir)
                                             if mask_root is None or folder.resolve() != mask_root.resolve()]
        for kind, folder in groups:
            mask_folders = [mask_root / kind, mask_root] if mask_root is not None else []
            if kind == "defect":
                mask_folders = mask_folders[1:]
            for path in list_images(folder):
                test.append(ImageRecord(path, 1, "test", kind, masks.find(mask_folders, path.stem)))
        if not test:
            raise InputError(f"{defect_dir}: no defect images found")
    return Category(root=good_dir.parent, name=good_dir.parent.name or good_dir.name, train=train, test=test)


def read_ground_truth(record: ImageRecord, image_shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """The pixel ground truth of a defective record, bool ``(H, W)``, or None when it has none.

    The mask must have its image's size (``image_shape``, else read from the image): a
    mask of another size is refused, never resized, the same way ``learn`` refuses a
    support mask, since a resized mask marks pixels the annotator did not mark.
    """
    if not record.is_defective or record.mask_path is None:
        return None
    if image_shape is None:
        image_shape = read_image(record.path).shape
    return read_mask(record.mask_path, expected_size=(image_shape[0], image_shape[1]), image_path=record.path)


# ----------------------------------------------------------------------------- checking

@dataclass
class ReportRow:
    """Counts for one (category, split, kind) group of a checked dataset."""

    category: str
    split: str
    kind: str
    images: int = 0
    masks: int = 0
    masks_missing: int = 0
    size_mismatches: int = 0
    unreadable: int = 0


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found. ``errors`` make the dataset unusable; ``warnings`` do not."""

    root: Path
    rows: list[ReportRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def image_count(self) -> int:
        return sum(row.images for row in self.rows)

    def table(self) -> str:
        """The rows as a plain-text table (what ``anogen dataset check`` prints)."""
        header = ("category", "split", "kind", "images", "masks", "masks missing", "size mismatches", "unreadable")
        lines = [header] + [
            (r.category, r.split, r.kind, str(r.images), str(r.masks), str(r.masks_missing),
             str(r.size_mismatches), str(r.unreadable))
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        numeric = [False, False, False, True, True, True, True, True]

        def fmt(line: tuple[str, ...]) -> str:
            cells = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(line, widths, numeric)]
            return "  ".join(cells).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([fmt(lines[0]), rule] + [fmt(line) for line in lines[1:]])


def _check_category(category: Category, report: DatasetReport, progress: ProgressFn,
                    cancel: threading.Event | None, done: list[int], total: int) -> None:
    rows: dict[tuple[str, str], ReportRow] = {}
    for record in category.train + category.test:
        check_cancel(cancel)
        row = rows.setdefault((record.split, record.defect_kind),
                              ReportRow(category.name, record.split, record.defect_kind))
        row.images += 1
        try:
            image_shape: tuple[int, ...] | None = read_image(record.path).shape[:2]
        except InputError as exc:
            row.unreadable += 1
            report.errors.append(str(exc))
            image_shape = None
        if record.label == 1:
            if record.mask_path is None:
                row.masks_missing += 1
                report.warnings.append(f"{record.path}: no ground-truth mask; {NO_GROUND_TRUTH_EFFECT}")
            else:
                row.masks += 1
                try:
                    mask = read_mask(record.mask_path)
                except InputError as exc:
                    row.unreadable += 1
                    report.errors.append(str(exc))
                else:
                    if image_shape is not None and mask.shape != image_shape:
                        row.size_mismatches += 1
                        report.errors.append(
                            f"{record.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but image "
                            f"{record.path} is {image_shape[1]}x{image_shape[0]}")
                    elif not mask.any():
                        report.warnings.append(f"{record.mask_path}: mask is empty (no defect pixel); "
                                               f"{NO_GROUND_TRUTH_EFFECT}")
        done[0] += 1
        progress(Progress(done[0], total, category.name))
    if not category.train_good:
        report.errors.append(f"{category.root}: train/good holds no images")
    if not category.test:
        report.warnings.append(f"{category.root}: no test images (detectors can train but not be evaluated)")
    # Train before test, good before the defect kinds: the order a reader expects.
    report.rows.extend(sorted(rows.values(), key=lambda r: (r.split != "train", r.kind != GOOD, r.kind)))

    # Masks nobody points at usually mean a renamed image or a misspelt kind folder.
    used = {r.mask_path.resolve() for r in category.test if r.mask_path is not None}
    ground_truth = category.root / "ground_truth"
    if ground_truth.is_dir():
        for folder in _subfolders(ground_truth):
            if not (category.root / "test" / folder.name).is_dir():
                report.warnings.append(f"{folder}: no matching test/{folder.name} folder")
                continue
            for mask_file in list_images(folder):
                if mask_file.resolve() not in used:
                    report.warnings.append(f"{mask_file}: mask without a matching test image")


def check_dataset(root: str | os.PathLike, progress: ProgressFn | None = None,
                  cancel: threading.Event | None = None) -> DatasetReport:
    """Open every image and mask of an MVTec AD category, or of every category under ``root``.

    Reports every unreadable file, every mask whose size differs from its image, and
    every defective image without a mask, not just the first problem.
    """
    root = Path(root)
    categories = find_categories(root)
    if not categories:
        raise InputError(f"{root}: no MVTec AD category found (expected train/good in it or in its sub-folders)")
    report = DatasetReport(root=root)
    read = [read_mvtec_category(folder) for folder in categories]
    total = sum(len(c.train) + len(c.test) for c in read)
    done = [0]
    for category in read:
        _check_category(category, report, progress or no_progress, cancel, done, total)
    return report
