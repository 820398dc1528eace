"""Reading defect annotations made in other tools (labelme, COCO, CVAT) as support masks.

One module per format turns its files into :class:`LabelledImage` records: an image file
and, per label, the union of that label's shapes as a ``bool (H, W)`` mask. The modules
only read; :mod:`anogen.data.annotations.importer` checks the labels against the user's
label -> defect kind mapping and commits everything into a project in one step.

Every problem is an :class:`AnnotationError` naming the file and the entry (a shape, an
annotation id, a pixel colour), collected over the whole source so the user fixes them
all at once. Qt-free and torch-free.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from anogen.errors import InputError

FORMATS = ("labelme", "coco", "cvat")
# Annotation tools let a click land a little past the border; up to this many pixels
# outside is clipped, further out is an error (the polygon belongs to another image).
EDGE_TOLERANCE = 1.0
_MAX_REPORTED = 10


class AnnotationError(InputError):
    """Bad annotation input; the message names the file and the entry of every problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:_MAX_REPORTED])
        more = f" (and {len(self.problems) - _MAX_REPORTED} more)" if len(self.problems) > _MAX_REPORTED else ""
        count = len(self.problems)
        super().__init__(f"{count} annotation problem{'s' if count != 1 else ''}: {shown}{more}")


class EntryError(ValueError):
    """One bad entry; the reader adds the file and entry name and keeps going."""


@dataclass
class LabelledImage:
    """One annotated image: its file and a mask per label.

    ``image`` is where the image is read from; when the annotation file embeds the
    image (labelme's ``imageData``), ``image_data`` holds its bytes and ``image`` is only
    its name. ``where`` names the annotation (file, entry) in messages; ``entries``
    names, per label, the first shape that used it.
    """

    image: Path
    masks: dict[str, np.ndarray]
    where: str
    entries: dict[str, str] = field(default_factory=dict)
    image_data: bytes | None = None


class Problems:
    """Collects entry errors over a whole source; :meth:`raise_if_any` reports them together."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, problem: str) -> None:
        self.items.append(f"{where}: {problem}")

    def raise_if_any(self) -> None:
        if self.items:
            raise AnnotationError(self.items)


def image_size(path: Path, data: bytes | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image file (or of its bytes), as anogen reads it (EXIF applied)."""
    import io

    from anogen.data.imageio import image_size as file_size

    if data is None:
        return file_size(path)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged bytes
        raise InputError(f"embedded image {path.name}: cannot read it ({exc.__class__.__name__})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def find_image(name: str, folders: Iterable[Path]) -> Path | None:
    """The first ``folder / name`` that is a file; ``name`` may hold sub-folders ('/')."""
    relative = Path(*name.replace("\\", "/").split("/"))
    if relative.is_absolute() or ".." in relative.parts:
        return None
    for folder in folders:
        candidate = folder / relative
        if candidate.is_file():
            return candidate
    return None


def check_points(points: Any, width: int, height: int, minimum: int) -> list[tuple[float, float]]:
    """Validate ``[[x, y], ...]`` (at least ``minimum`` finite points inside the image,
    give or take :data:`EDGE_TOLERANCE`) and return them clipped to the image."""
    if not isinstance(points, (list, tuple)) or len(points) < minimum:
        raise EntryError(f"needs at least {minimum} points, got "
                         f"{len(points) if isinstance(points, (list, tuple)) else type(points).__name__}")
    result = []
    for index, point in enumerate(points):
        if (not isinstance(point, (list, tuple)) or len(point) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in point)):
            raise EntryError(f"point #{index} is not a pair of finite numbers: {point!r}")
        x, y = float(point[0]), float(point[1])
        if not (-EDGE_TOLERANCE <= x <= width + EDGE_TOLERANCE and -EDGE_TOLERANCE <= y <= height + EDGE_TOLERANCE):
            raise EntryError(f"polygon outside the image: point #{index} ({x:g}, {y:g}) is off the "
                             f"{width}x{height} image")
        result.append((min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))))
    return result


def fill_polygon(points: Sequence[tuple[float, float]], width: int, height: int, *,
                 centres: bool = False) -> np.ndarray:
    """The polygon filled, ``bool (H, W)``.

    Default: on pixel coordinates with edges included, as labelme draws it. ``centres``:
    COCO's convention, where pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)`` and is set
    when its centre lies inside, so the rectangle ``(0, 0)-(w, h)`` is exactly w x h pixels.
    """
    if centres:
        return _fill_centres(points, width, height)
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(list(points), fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _fill_centres(points: Sequence[tuple[float, float]], width: int, height: int) -> np.ndarray:
    """Even-odd scanline fill sampled at pixel centres (PIL rounds sub-pixel coordinates)."""
    xy = np.asarray(points, dtype=np.float64)
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    mask = np.zeros((height, width), dtype=bool)
    for row in range(height):
        y = row + 0.5
        # Half-open in y, so a vertex on the scanline counts once and flat edges never.
        crossing = ((y0 <= y) & (y < y1)) | ((y1 <= y) & (y < y0))
        if not crossing.any():
            continue
        xs = np.sort(x0[crossing] + (y - y0[crossing]) * (x1[crossing] - x0[crossing])
                     / (y1[crossing] - y0[crossing]))
        for left, right in zip(xs[0::2], xs[1::2]):
            # Pixel i is inside when left <= i + 0.5 < right.
            start, stop = max(math.ceil(left - 0.5), 0), min(math.ceil(right - 0.5), width)
            mask[row, start:stop] = True
    return mask


def add_mask(record: LabelledImage, label: str, mask: np.ndarray, entry: str) -> None:
    """Merge one shape's mask into the record (shapes of one label are united)."""
    if not mask.any():
        raise EntryError("the shape covers no pixel")
    if label in record.masks:
        record.masks[label] = record.masks[label] | mask
    else:
        record.masks[label] = mask
        record.entries[label] = entry


def check_label(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EntryError(f"label must be a non-empty string, got {value!r}")
    return value.strip()


def read_source(fmt: str, source: str | os.PathLike, images: str | os.PathLike | None = None
                ) -> list[LabelledImage]:
    """Read an annotation source of format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "labelme":
        from anogen.data.annotations.labelme import read_labelme

        return read_labelme(source, images)
    if fmt == "coco":
        from anogen.data.annotations.coco import read_coco

        return read_coco(source, images)
    if fmt == "cvat":
        from anogen.data.annotations.cvat import read_cvat

        return read_cvat(source, images)
    raise InputError(f"unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)}")
