"""COCO instance annotations: ``images``, ``categories`` and ``annotations`` with polygon or
RLE segmentation, plus the RLE codec (written here, no pycocotools).

RLE, as pycocotools defines it: the mask is read column by column (Fortran order) and
``counts`` are the lengths of alternating runs, zeros first (so a mask whose first
pixel is set starts with a 0 run). ``counts`` is a list of integers ("uncompressed",
usually with ``iscrowd: 1``) or a string ("compressed"): each count is written as
6-bit groups, 5 data bits each, offset by 48 to printable characters, bit 0x20 meaning
"another group follows" and bit 0x10 of the last group the sign; from the fourth count
on, the value stored is the difference to the count two places earlier.

Polygons are filled on COCO's pixel grid: pixel ``(i, j)`` spans ``[i, i+1)`` and is
set when its centre is inside, so a box polygon traced along pixel edges gives exactly
its pixels. Image files are looked up by ``file_name`` in ``--images`` or, without it, next to the
JSON file, in its ``images/`` folder or in ``../images`` (the usual layouts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anogen.data.annotations import (
    EntryError,
    LabelledImage,
    Problems,
    add_mask,
    check_label,
    check_points,
    fill_polygon,
    find_image,
    image_size,
)
from anogen.errors import InputError

# ----------------------------------------------------------------------------- RLE


def string_to_counts(text: str) -> list[int]:
    """Decode compressed RLE counts (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise EntryError("compressed RLE counts end in the middle of a number")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise EntryError(f"compressed RLE counts hold an invalid character {text[position]!r}")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position, shift = position + 1, shift + 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def counts_to_string(counts: Sequence[int]) -> str:
    """Encode RLE counts compressed (pycocotools' ``rleToString``)."""
    chars = []
    for index, count in enumerate(counts):
        value = int(count) - (int(counts[index - 2]) if index > 2 else 0)
        more = True
        while more:
            code = value & 0x1F
            value >>= 5
            more = value != -1 if code & 0x10 else value != 0
            chars.append(chr((code | 0x20 if more else code) + 48))
    return "".join(chars)


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a ``bool (H, W)`` mask in column order, zeros first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """A COCO RLE segmentation (compressed counts) of a ``bool (H, W)`` mask."""
    height, width = np.asarray(mask).shape
    return {"size": [int(height), int(width)], "counts": counts_to_string(mask_to_counts(mask))}


def decode_rle(rle: Any, height: int, width: int) -> np.ndarray:
    """The ``bool (H, W)`` mask of an RLE segmentation, checked against the image size."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise EntryError("RLE segmentation needs 'counts' and 'size'")
    size = rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise EntryError(f"RLE 'size' must be [height, width], got {size!r}")
    if tuple(size) != (height, width):
        raise EntryError(f"RLE size {size[1]}x{size[0]} (WxH) does not match the {width}x{height} image")
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    elif not (isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts)):
        raise EntryError("RLE 'counts' must be a string or a list of integers")
    if any(v < 0 for v in counts):
        raise EntryError("RLE 'counts' hold a negative run")
    if sum(counts) != height * width:
        raise EntryError(f"RLE runs cover {sum(counts)} pixels, the image has {height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate, zeros first
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T.copy()


# ----------------------------------------------------------------------------- reading


def _polygons_mask(segmentation: list, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    if not segmentation:
        raise EntryError("empty segmentation (a box-only annotation has no pixel mask)")
    for index, flat in enumerate(segmentation):
        if not isinstance(flat, list) or len(flat) % 2:
            raise EntryError(f"polygon #{index} must be a flat list [x1, y1, x2, y2, ...]")
        try:
            points = check_points([flat[i:i + 2] for i in range(0, len(flat), 2)], width, height, 3)
        except EntryError as exc:
            raise EntryError(f"polygon #{index}: {exc}") from None
        mask |= fill_polygon(points, width, height, centres=True)
    return mask


def _image_folders(json_path: Path, images: Path | None) -> list[Path]:
    if images is not None:
        return [images]
    parent = json_path.parent
    return [parent, parent / "images", parent.parent / "images", parent.parent]


def _index(items: Any, what: str, where: str) -> dict[int, dict[str, Any]]:
    if not isinstance(items, list):
        raise InputError(f"{where}: not a COCO instances file (no '{what}' list)")
    table: dict[int, dict[str, Any]] = {}
    for position, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            raise InputError(f"{where}: {what}[{position}] has no integer 'id'")
        if item["id"] in table:
            raise InputError(f"{where}: {what} id {item['id']} appears twice")
        table[item["id"]] = item
    return table


def read_coco(source: str | os.PathLike, images: str | os.PathLike | None = None) -> list[LabelledImage]:
    """The annotated images of a COCO instances JSON file; any problem raises for the whole file."""
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: COCO annotation file not found (give the instances .json file)")
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{where}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: not a COCO instances file (expected a JSON object)")
    image_table = _index(data.get("images"), "images", where)
    categories = _index(data.get("categories"), "categories", where)
    if not isinstance(data.get("annotations"), list):
        raise InputError(f"{where}: not a COCO instances file (no 'annotations' list)")
    folders = _image_folders(path, Path(images) if images is not None else None)
    problems = Problems()
    records: dict[int, LabelledImage] = {}
    sizes: dict[int, tuple[int, int] | None] = {}

    def record_for(image_id: int, entry: str) -> LabelledImage | None:
        if image_id in sizes:
            return records.get(image_id)
        sizes[image_id] = None
        info = image_table[image_id]
        name = info.get("file_name")
        found = find_image(name, folders) if isinstance(name, str) else None
        if found is None:
            searched = " or ".join(str(f) for f in folders)
            problems.add(f"{where}: {entry}", f"missing image: image id {image_id} file_name {name!r} is not in "
                                              f"{searched}")
            return None
        try:
            width, height = image_size(found)
        except InputError as exc:
            problems.add(f"{where}: {entry}", str(exc))
            return None
        stated = (info.get("width"), info.get("height"))
        if all(isinstance(v, int) for v in stated) and stated != (width, height):
            problems.add(f"{where}: image id {image_id}", f"width x height is {stated[0]}x{stated[1]} but "
                                                          f"{found} is {width}x{height}")
            return None
        sizes[image_id] = (width, height)
        records[image_id] = LabelledImage(image=found, masks={}, where=f"{where}: image id {image_id}")
        return records[image_id]

    for position, annotation in enumerate(data["annotations"]):
        ident = annotation.get("id", f"#{position}") if isinstance(annotation, dict) else f"#{position}"
        entry = f"annotation id {ident}"
        try:
            if not isinstance(annotation, dict):
                raise EntryError("an annotation must be a JSON object")
            image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
            if image_id not in image_table:
                raise EntryError(f"missing image: image_id {image_id!r} is not in 'images'")
            if category_id not in categories:
                raise EntryError(f"unknown label: category_id {category_id!r} is not in 'categories'")
            label = check_label(categories[category_id].get("name"))
            record = record_for(image_id, entry)
            if record is None:
                continue  # the image's problem is reported once
            width, height = sizes[image_id]  # type: ignore[misc]
            segmentation = annotation.get("segmentation")
            if isinstance(segmentation, dict):
                mask = decode_rle(segmentation, height, width)
            elif isinstance(segmentation, list):
                mask = _polygons_mask(segmentation, width, height)
            else:
                raise EntryError("no segmentation (a box-only annotation has no pixel mask)")
            add_mask(record, label, mask, f"{entry} ({label})")
        except EntryError as exc:
            problems.add(f"{where}: {entry}", str(exc))
    problems.raise_if_any()
    return [records[i] for i in sorted(records) if records[i].masks]
