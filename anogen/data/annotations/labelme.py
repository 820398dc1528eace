"""labelme JSON: one file per image, ``shapes`` of polygons, rectangles, circles and masks.

The fields read (labelme 4 and 5)::

    {"imagePath": "img.png", "imageData": "<base64>" | null,
     "imageHeight": 480, "imageWidth": 640,
     "shapes": [{"label": "scratch", "shape_type": "polygon", "points": [[x, y], ...]},
                {"label": "dent", "shape_type": "mask", "points": [[x1, y1], [x2, y2]],
                 "mask": "<base64 PNG of the box's pixels>"}, ...]}

Shapes are drawn the way labelme's own ``shape_to_mask`` draws them (PIL, edges
included). ``imagePath`` is relative to the JSON file; an image that is not there is
taken from ``imageData`` when the file embeds it. Points, lines and line strips have
no area and are refused rather than silently dropped.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")


def annotation_files(source: Path) -> list[Path]:
    """The labelme files of a source: the file itself, or the ``*.json`` directly in a folder."""
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.glob("*.json") if not p.name.startswith("."))
        if not files:
            raise InputError(f"{source}: no labelme .json files in this folder")
        return files
    raise InputError(f"{source}: not found")


def _decode_base64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise EntryError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        raise EntryError(f"{what} is not valid base64") from None


def _shape_mask(shape: dict[str, Any], width: int, height: int) -> np.ndarray:
    kind = shape.get("shape_type") or "polygon"  # labelme 3 files have no shape_type
    points = shape.get("points")
    if kind == "polygon":
        return fill_polygon(check_points(points, width, height, 3), width, height)
    if kind == "rectangle":
        (x0, y0), (x1, y1) = check_points(points, width, height, 2)[:2]
        return fill_polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], width, height)
    if kind == "circle":
        (cx, cy), (px, py) = check_points(points, width, height, 2)[:2]
        radius = math.hypot(px - cx, py - cy)
        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1, outline=1)
        return np.asarray(canvas, dtype=bool)
    if kind == "mask":
        (x0, y0), _ = check_points(points, width, height, 2)[:2]
        try:
            with Image.open(io.BytesIO(_decode_base64(shape.get("mask"), "'mask'"))) as image:
                pixels = np.asarray(image.convert("L")) > 0
        except EntryError:
            raise
        except Exception:  # noqa: BLE001 - PIL and base64 raise many types; reported per entry
            raise EntryError("'mask' is not a base64-encoded image") from None
        left, top = int(x0), int(y0)  # labelme places the mask at the integer top-left corner
        rows, cols = pixels.shape
        if left + cols > width or top + rows > height:
            raise EntryError(f"polygon outside the image: the {cols}x{rows} mask at ({left}, {top}) does not fit "
                             f"the {width}x{height} image")
        mask = np.zeros((height, width), dtype=bool)
        mask[top:top + rows, left:left + cols] = pixels
        return mask
    if kind in ("point", "line", "linestrip", "points"):
        raise EntryError(f"a {kind} shape has no area; only {', '.join(AREA_SHAPES)} shapes become masks")
    raise EntryError(f"unknown shape_type {kind!r}")


def read_labelme_file(path: Path, images: Path | None, problems: Problems) -> LabelledImage | None:
    """One labelme file as a record; its problems go to ``problems`` (then None)."""
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.add(where, f"not a readable JSON file ({exc})")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        problems.add(where, "not a labelme file (no 'shapes' list)")
        return None
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path.strip():
        problems.add(where, "no 'imagePath'")
        return None
    name = image_path.replace("\\", "/")
    folders = [path.parent] + ([images] if images is not None else [])
    found = find_image(name, folders) or find_image(name.rsplit("/", 1)[-1], folders)
    embedded: bytes | None = None
    if found is None:
        if data.get("imageData"):
            try:
                embedded = _decode_base64(data["imageData"], "'imageData'")
            except EntryError as exc:
                problems.add(where, str(exc))
                return None
            found = path.parent / name.rsplit("/", 1)[-1]
        else:
            searched = " or ".join(str(f) for f in folders)
            problems.add(where, f"missing image: imagePath {image_path!r} is not in {searched} and the file "
                                "embeds no imageData")
            return None
    try:
        width, height = image_size(found, embedded)
    except InputError as exc:
        problems.add(where, str(exc))
        return None
    stated = (data.get("imageWidth"), data.get("imageHeight"))
    if all(isinstance(v, int) for v in stated) and stated != (width, height):
        problems.add(where, f"imageWidth x imageHeight is {stated[0]}x{stated[1]} but image {found.name} is "
                            f"{width}x{height}")
        return None
    record = LabelledImage(image=found, masks={}, where=where, image_data=embedded)
    for index, shape in enumerate(data["shapes"]):
        label = shape.get("label") if isinstance(shape, dict) else None
        entry = f"shape #{index}" + (f" ({label})" if isinstance(label, str) else "")
        try:
            if not isinstance(shape, dict):
                raise EntryError("a shape must be a JSON object")
            label = check_label(label)
            add_mask(record, label, _shape_mask(shape, width, height), entry)
        except EntryError as exc:
            problems.add(f"{where}: {entry}", str(exc))
    return record


def read_labelme(source: str | os.PathLike, images: str | os.PathLike | None = None) -> list[LabelledImage]:
    """Every labelme file of ``source`` (a file or a folder); images next to each file or in
    ``images``. Files without shapes are skipped; any problem raises for the whole source."""
    problems = Problems()
    records = []
    for path in annotation_files(Path(source)):
        record = read_labelme_file(path, Path(images) if images is not None else None, problems)
        if record is not None and record.masks:
            records.append(record)
    problems.raise_if_any()
    return records
