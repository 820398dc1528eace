"""CVAT's "Segmentation mask 1.1" export (a Pascal VOC segmentation layout), as a folder or
the exported .zip::

    labelmap.txt                 # label:r,g,b:parts:actions, one label a line
    ImageSets/Segmentation/default.txt
    SegmentationClass/<name>.png # one colour per label (RGB or palette PNG)
    SegmentationObject/<name>.png
    JPEGImages/<name>.jpg        # only when the export was made with images

Only ``SegmentationClass`` is read: a support mask is per defect kind, not per
instance. The label ``background`` (and black) is the background. Without images in
the export, ``--images`` names the folder holding them (looked up by ``<name>.*``).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from anogen.data.annotations import EntryError, LabelledImage, Problems, add_mask, image_size
from anogen.data.imageio import IMAGE_SUFFIXES
from anogen.errors import InputError

LABELMAP = "labelmap.txt"
CLASS_DIR = "SegmentationClass"
IMAGES_DIR = "JPEGImages"
BACKGROUND = "background"


class _Tree:
    """Read-only access to the export, whether a folder or a zip archive."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.zip: zipfile.ZipFile | None = None
        if source.is_file():
            try:
                self.zip = zipfile.ZipFile(source)
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"{source}: not a CVAT export folder or .zip ({exc})") from None
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
            # A zip made by hand may wrap everything in one top folder.
            roots = {n.split("/", 1)[0] for n in names}
            self.prefix = f"{roots.pop()}/" if len(roots) == 1 and f"{LABELMAP}" not in names else ""
            self.names = [n[len(self.prefix):] for n in names if n.startswith(self.prefix)]
        elif source.is_dir():
            self.names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
        else:
            raise InputError(f"{source}: not found")

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(self.prefix + name)
        return (self.source / name).read_bytes()

    def where(self, name: str) -> str:
        return f"{self.source}:{name}" if self.zip is not None else str(self.source / name)


def parse_labelmap(text: str, where: str) -> dict[tuple[int, int, int], str]:
    """``{(r, g, b): label}`` from labelmap.txt."""
    colours: dict[tuple[int, int, int], str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":")
        try:
            label = fields[0].strip()
            rgb = tuple(int(v) for v in fields[1].split(","))
            if not label or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise ValueError
        except (IndexError, ValueError):
            raise InputError(f"{where}: line {number}: expected 'label:r,g,b::', got {line.strip()!r}") from None
        if rgb in colours:
            raise InputError(f"{where}: line {number}: colour {rgb} is also label {colours[rgb]!r}")
        colours[(rgb[0], rgb[1], rgb[2])] = label
    return colours


def _find_image(tree: _Tree, stem: str, images: Path | None) -> tuple[Path, bytes | None]:
    """The image of mask ``stem``: in the export's JPEGImages/, else in ``images``."""
    for name in tree.names:
        path = PurePosixPath(name)
        if (name.startswith(f"{IMAGES_DIR}/") and path.suffix.lower() in IMAGE_SUFFIXES
                and str(path.relative_to(IMAGES_DIR).with_suffix("")) == stem):
            if tree.zip is not None:
                return Path(path.name), tree.read(name)
            return tree.source / name, None
    if images is not None:
        for candidate in (images / stem, images / PurePosixPath(stem).name):
            for match in sorted(candidate.parent.glob(f"{candidate.name}.*")) if candidate.parent.is_dir() else []:
                if match.suffix.lower() in IMAGE_SUFFIXES and match.is_file():
                    return match, None
    searched = f"{IMAGES_DIR}/ of the export" + (f" or {images}" if images is not None else
                                                 " (export with images, or pass --images DIR)")
    raise EntryError(f"missing image: no {stem}.* in {searched}")


def read_cvat(source: str | os.PathLike, images: str | os.PathLike | None = None) -> list[LabelledImage]:
    """Every class mask of a CVAT segmentation-mask export; any problem raises for the whole export."""
    tree = _Tree(Path(source))
    image_root = Path(images) if images is not None else None
    if LABELMAP not in tree.names:
        raise InputError(f"{tree.source}: no {LABELMAP}; export as CVAT 'Segmentation mask 1.1'")
    try:
        colours = parse_labelmap(tree.read(LABELMAP).decode("utf-8"), tree.where(LABELMAP))
    except UnicodeDecodeError:
        raise InputError(f"{tree.where(LABELMAP)}: not UTF-8 text") from None
    masks = sorted(n for n in tree.names if n.startswith(f"{CLASS_DIR}/") and n.lower().endswith(".png"))
    if not masks:
        raise InputError(f"{tree.source}: no {CLASS_DIR}/*.png masks")
    problems = Problems()
    records = []
    for name in masks:
        where = tree.where(name)
        stem = str(PurePosixPath(name).relative_to(CLASS_DIR).with_suffix(""))
        try:
            with Image.open(io.BytesIO(tree.read(name))) as image:
                rgb = np.asarray(image.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a damaged mask; reported per entry
            problems.add(where, f"cannot read the mask ({exc.__class__.__name__})")
            continue
        packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        try:
            image_path, data = _find_image(tree, stem, image_root)
            width, height = image_size(image_path, data)
            if (width, height) != (rgb.shape[1], rgb.shape[0]):
                raise EntryError(f"mask is {rgb.shape[1]}x{rgb.shape[0]} but image {image_path.name} is "
                                 f"{width}x{height}")
        except (EntryError, InputError) as exc:
            problems.add(where, str(exc))
            continue
        record = LabelledImage(image=image_path, masks={}, where=where, image_data=data)
        for value in np.unique(packed).tolist():
            colour = ((value >> 16) & 255, (value >> 8) & 255, value & 255)
            label = colours.get(colour)
            if label is None and colour == (0, 0, 0):
                continue  # black is the background even when labelmap.txt does not say so
            if label is None:
                ys, xs = np.nonzero(packed == value)
                problems.add(where, f"colour {colour} at pixel ({xs[0]}, {ys[0]}) is not in {LABELMAP}")
                continue
            if label.lower() == BACKGROUND:
                continue
            add_mask(record, label, packed == value, f"colour {colour} ({label})")
        if record.masks:
            records.append(record)
    problems.raise_if_any()
    return records
