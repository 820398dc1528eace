"""Writing generated sets in the layouts other tools train on: anomalib, COCO, YOLO, MVTec AD.

:func:`collect` reads one or more generated sets (rejected samples left out, as the
detector trainer does) into :class:`ExportInput`; one module per format writes it into
a folder. :func:`export_sets` builds that folder under a temporary name and moves it
into place only when it is complete (:func:`anogen.atomic.staged_directory`), so a failed
export leaves nothing behind. Image bytes are copied unchanged; masks are written 0/255.
Qt-free and torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anogen.atomic import staged_directory
from anogen.data.generated import read_generated_sets
from anogen.data.imageio import list_images, read_mask
from anogen.data.safe_names import safe_stem
from anogen.errors import InputError

FORMATS = ("anomalib", "coco", "yolo", "mvtec")


@dataclass
class ExportSample:
    """One generated sample under its name in the export (unique over all sets)."""

    name: str
    kind: str
    image_path: Path
    mask_path: Path
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, x1/y1 exclusive

    def mask(self) -> np.ndarray:
        return read_mask(self.mask_path)


@dataclass
class ExportInput:
    samples: list[ExportSample]
    goods: list[Path] = field(default_factory=list)  # defect-free images, for the layouts that hold them

    @property
    def kinds(self) -> list[str]:
        return sorted({s.kind for s in self.samples})


def _source_path(folder: Path, source: str) -> Path | None:
    path = Path(source)
    if not path.is_absolute():
        path = folder / path
    return path if path.is_file() else None


def collect(sets: Sequence[str | os.PathLike], normals: str | os.PathLike | None = None) -> ExportInput:
    """The usable samples of ``sets`` and the good images: those in ``normals``, else the
    sources the samples were generated from (when they are still where the manifest says)."""
    if not sets:
        raise InputError("name at least one generated set")
    samples: list[ExportSample] = []
    used: set[str] = set()
    sources: dict[Path, None] = {}  # ordered set
    for folder, sample in read_generated_sets(sets):
        source = _source_path(Path(folder), sample.source)
        if source is not None:  # a rejected sample's source is still a good image
            sources[source.resolve()] = None
        if not sample.usable:
            continue
        stem = safe_stem(f"{sample.defect_kind}_{sample.id}")
        name, counter = stem, 1
        while name in used:  # sets numbered from zero clash on ids
            name, counter = f"{stem}_{counter}", counter + 1
        used.add(name)
        samples.append(ExportSample(name=name, kind=sample.defect_kind, image_path=sample.image_path,
                                    mask_path=sample.mask_path, box=sample.box))
    if not samples:
        names = ", ".join(str(s) for s in sets)
        raise InputError(f"{names}: no usable sample (every sample is rejected or the sets are empty)")
    goods = list_images(normals) if normals is not None else list(sources)
    return ExportInput(samples=samples, goods=goods)


def unique_names(paths: Sequence[Path]) -> list[str]:
    """File names for ``paths`` in one folder: their own names, numbered when two clash."""
    names, used = [], set()
    for path in paths:
        stem, suffix = safe_stem(path.stem), path.suffix.lower()
        name, counter = f"{stem}{suffix}", 1
        while name in used:
            name, counter = f"{stem}_{counter}{suffix}", counter + 1
        used.add(name)
        names.append(name)
    return names


def copy_file(src: Path, dest: Path) -> None:
    """Copy bytes unchanged (the staging folder is published atomically as a whole)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes())


def _writer(fmt: str) -> Callable[[ExportInput, Path], dict[str, int]]:
    if fmt == "anomalib":
        from anogen.data.exports.anomalib import write_anomalib

        return write_anomalib
    if fmt == "coco":
        from anogen.data.exports.coco import write_coco

        return write_coco
    if fmt == "yolo":
        from anogen.data.exports.yolo import write_yolo

        return write_yolo
    if fmt == "mvtec":
        from anogen.data.exports.mvtec import write_mvtec

        return write_mvtec
    raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def export_sets(fmt: str, sets: Sequence[str | os.PathLike], out: str | os.PathLike,
                normals: str | os.PathLike | None = None) -> dict[str, int]:
    """Write ``sets`` into ``out`` in format ``fmt``; returns counts (``samples``, ``good``, ...).

    ``out`` is replaced only once the export is complete.
    """
    writer = _writer(fmt)
    data = collect(sets, normals)
    if fmt in ("anomalib", "mvtec") and not data.goods:
        raise InputError(f"the {fmt} layout needs good images and the samples' source images are not found; "
                         "pass --normals DIR")
    with staged_directory(out) as staging:
        staging.chmod(0o755)  # mkdtemp makes it private; an export is ordinary data
        counts = writer(data, staging)
    return counts
