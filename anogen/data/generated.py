"""The on-disk format of a generated set (stage 2 output, stage 3 input).

A generated set is a folder::

    images/<id>.png     the generated image (lossless PNG, same size as its source)
    masks/<id>.png      its box mask, 0/255
    manifest.jsonl      one JSON object per line, one line per sample

Each manifest line holds::

    {"id": "...", "image": "images/<id>.png", "mask": "masks/<id>.png",
     "source": "<path of the good image, as given>", "box": [x0, y0, x1, y1],
     "defect_kind": "...", "seed": 0, "model": "...", "embedding_hash": "...",
     "steps": 50, "guidance": 10.0, "status": "accepted" | "rejected" | "pending",
     "settings": {"strength": 1.0, "restore_detail": false, ...}}

``settings`` (optional; absent in sets written before it was recorded) holds the other
stage-2 settings that shaped the image, so a set says how it was made.

``box`` is in pixels with ``x1``/``y1`` exclusive. ``image`` and ``mask`` are relative to
the folder and may not leave it; ``source`` is kept exactly as given (provenance only).

This module is Qt-free and torch-free: the detector trainer, the GUI and the CLI all
read and write sets through it. Writes go to a staging folder that replaces the target
only on :meth:`GeneratedSetWriter.commit`, so a cancelled job leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anogen.atomic import atomic_write_text, staged_directory
from anogen.data.imageio import encode_png, read_image, read_mask
from anogen.errors import InputError

MANIFEST_NAME = "manifest.jsonl"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
STATUSES = ("accepted", "rejected", "pending")

# Field name -> accepted JSON types. bool is excluded from int explicitly below.
_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "image": (str,),
    "mask": (str,),
    "source": (str,),
    "box": (list,),
    "defect_kind": (str,),
    "seed": (int,),
    "model": (str,),
    "embedding_hash": (str,),
    "steps": (int,),
    "guidance": (int, float),
    "status": (str,),
}
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_MAX_REPORTED_ERRORS = 10


@dataclass
class GeneratedSample:
    """One generated image with its provenance.

    ``image``/``mask`` are the manifest's relative paths; ``image_path``/``mask_path`` are
    the same files resolved against the set folder (absolute).
    """

    id: str
    image: str
    mask: str
    source: str
    box: tuple[int, int, int, int]
    defect_kind: str
    seed: int
    model: str
    embedding_hash: str
    steps: int
    guidance: float
    status: str = "accepted"
    settings: dict[str, Any] = field(default_factory=dict)  # the other stage-2 settings; {} in older sets
    image_path: Path = field(default=Path(), compare=False)
    mask_path: Path = field(default=Path(), compare=False)

    @property
    def usable(self) -> bool:
        """True unless the user rejected the sample."""
        return self.status != "rejected"

    def to_json(self) -> dict[str, Any]:
        """The manifest line of this sample (relative paths only)."""
        return {
            "id": self.id,
            "image": self.image,
            "mask": self.mask,
            "source": self.source,
            "box": [int(v) for v in self.box],
            "defect_kind": self.defect_kind,
            "seed": int(self.seed),
            "model": self.model,
            "embedding_hash": self.embedding_hash,
            "steps": int(self.steps),
            "guidance": float(self.guidance),
            "status": self.status,
            **({"settings": dict(self.settings)} if self.settings else {}),
        }

    def load_image(self) -> np.ndarray:
        """The generated image, RGB uint8 (H, W, 3)."""
        return read_image(self.image_path)

    def load_mask(self) -> np.ndarray:
        """Where the sample is defective, bool (H, W): its box, or the defect outline painted
        in it."""
        return read_mask(self.mask_path)


def usable_samples(samples: Iterable[GeneratedSample]) -> list[GeneratedSample]:
    """The samples a detector may train on: accepted and pending ones, not rejected ones."""
    return [s for s in samples if s.usable]


# ----------------------------------------------------------------------------- reading


def _inside(folder: Path, relative: str) -> Path | None:
    """``folder / relative`` resolved, or None when it is absolute or escapes ``folder``."""
    if not relative or Path(relative).is_absolute() or "\\" in relative:
        return None
    resolved = (folder / relative).resolve()
    if not resolved.is_relative_to(folder):
        return None
    return resolved


def _check_box(value: Any) -> tuple[int, int, int, int]:
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"'box' must be a list of 4 integers [x0, y0, x1, y1], got {value!r}")
    x0, y0, x1, y1 = value
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        raise ValueError(f"'box' {value} is empty or negative (need 0 <= x0 < x1 and 0 <= y0 < y1)")
    return (x0, y0, x1, y1)


def _check_settings(value: Any) -> dict[str, Any]:
    scalars = (str, int, float, bool, type(None))
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, scalars)
                                              for k, v in value.items()):
        raise ValueError("'settings' must be an object of names to plain values (text, numbers, true/false)")
    return dict(value)


def _image_size(path: Path, name: str) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`read_image` returns it (EXIF rotation
    applied), from its header only: checking every box of a set stays fast."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112)  # 5-8: turned by 90 degrees
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a damaged file
        raise ValueError(f"image file {name} cannot be read ({exc.__class__.__name__})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _sample_from_json(obj: Any, folder: Path) -> GeneratedSample:
    """Validate one parsed manifest line; raises ValueError with a short reason."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [name for name in _FIELDS if name not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    for name, types in _FIELDS.items():
        value = obj[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"field '{name}' has the wrong type ({type(value).__name__})")
    if not _ID_PATTERN.match(obj["id"]):
        raise ValueError(f"id {obj['id']!r} is not a safe file name")
    if obj["status"] not in STATUSES:
        raise ValueError(f"status {obj['status']!r} is not one of {', '.join(STATUSES)}")
    box = _check_box(obj["box"])
    settings = _check_settings(obj.get("settings", {}))
    paths = {}
    for name in ("image", "mask"):
        resolved = _inside(folder, obj[name])
        if resolved is None:
            raise ValueError(f"'{name}' path {obj[name]!r} leaves the set folder")
        if not resolved.is_file():
            raise ValueError(f"{name} file {obj[name]} is missing")
        paths[name] = resolved
    width, height = _image_size(paths["image"], obj["image"])
    if box[2] > width or box[3] > height:
        # Trained on, such a box would mark pixels that do not exist as defective.
        raise ValueError(f"box {list(box)} lies outside its {width}x{height} image {obj['image']}")
    return GeneratedSample(
        id=obj["id"], image=obj["image"], mask=obj["mask"], source=obj["source"], box=box,
        defect_kind=obj["defect_kind"], seed=obj["seed"], model=obj["model"],
        embedding_hash=obj["embedding_hash"], steps=obj["steps"], guidance=float(obj["guidance"]),
        status=obj["status"], settings=settings, image_path=paths["image"], mask_path=paths["mask"],
    )


def read_generated_set(folder: str | os.PathLike) -> list[GeneratedSample]:
    """Read and validate a generated set; samples come back in manifest order.

    Every problem (bad JSON, missing field, missing file, path leaving the folder,
    duplicate id) is collected with its line number and reported in one
    :class:`~anogen.errors.InputError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: generated set folder not found")
    folder = folder.resolve()
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise InputError(f"{folder}: not a generated set (no {MANIFEST_NAME})")
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{manifest}: cannot read ({exc})") from None

    samples: list[GeneratedSample] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: invalid JSON ({exc.msg})")
            continue
        try:
            sample = _sample_from_json(obj, folder)
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        if sample.id in seen:
            errors.append(f"line {number}: id {sample.id!r} already used on line {seen[sample.id]}")
            continue
        seen[sample.id] = number
        samples.append(sample)
    if errors:
        shown = "; ".join(errors[:_MAX_REPORTED_ERRORS])
        more = f" (and {len(errors) - _MAX_REPORTED_ERRORS} more)" if len(errors) > _MAX_REPORTED_ERRORS else ""
        raise InputError(f"{manifest}: {len(errors)} bad line(s): {shown}{more}")
    return samples


def _manifest_text(samples: Sequence[GeneratedSample]) -> str:
    return "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in samples)


def write_manifest(folder: str | os.PathLike, samples: Sequence[GeneratedSample]) -> None:
    """Atomically rewrite the manifest of an existing set (e.g. after accept/reject).

    The image and mask files must already be in the folder; use
    :class:`GeneratedSetWriter` to create a set.
    """
    folder = Path(folder).resolve()
    for sample in samples:
        for relative in (sample.image, sample.mask):
            resolved = _inside(folder, relative)
            if resolved is None or not resolved.is_file():
                raise InputError(f"{folder}: sample {sample.id}: file {relative!r} is not in the set")
    atomic_write_text(folder / MANIFEST_NAME, _manifest_text(samples))


# ----------------------------------------------------------------------------- writing


def _box_mask(box: Sequence[int], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    mask[y0:y1, x0:x1] = True
    return mask


class GeneratedSetWriter:
    """Build a generated set in a staging folder; :meth:`commit` moves it into place.

    Use it as a context manager: leaving the block normally commits; an exception
    (including :class:`~anogen.errors.JobCancelled`) cancels, and nothing remains::

        with GeneratedSetWriter(out) as writer:
            writer.add(image, box=(10, 10, 40, 30), source="good/000.png", ...)

    An existing folder at ``folder`` is replaced only when the new set is complete.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.samples: list[GeneratedSample] = []
        self._stack = contextlib.ExitStack()
        self.staging: Path = self._stack.enter_context(staged_directory(self.folder))
        self.staging.chmod(0o755)  # mkdtemp makes it private; a generated set is ordinary data
        (self.staging / IMAGES_DIR).mkdir()
        (self.staging / MASKS_DIR).mkdir()
        self._ids: set[str] = set()
        self._closed = False

    def __enter__(self) -> GeneratedSetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.cancel()

    def add(self, image: np.ndarray, *, box: Sequence[int], source: str | os.PathLike,
            defect_kind: str, seed: int, model: str, embedding_hash: str, steps: int,
            guidance: float, status: str = "pending", id: str | None = None,
            mask: np.ndarray | None = None, settings: dict[str, Any] | None = None) -> GeneratedSample:
        """Write one sample (image + its box mask) into the staging folder.

        ``mask`` (bool, the image's size, inside ``box``) replaces the filled box as the
        box mask, e.g. for a rotated box whose ``box`` is its axis-aligned bounds.
        A new sample is ``pending`` (to review) until the user accepts or rejects it;
        pending samples still train unless rejected (:func:`usable_samples`). Manifests
        written before this default keep the status they state. ``settings`` records the
        other stage-2 settings that made the image (plain JSON values).
        """
        if self._closed:
            raise RuntimeError("this generated set was already committed or cancelled")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"generated image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        try:
            x0, y0, x1, y1 = _check_box([int(v) for v in box])
        except (TypeError, ValueError) as exc:
            raise InputError(f"sample for {source}: {exc}") from None
        if x1 > width or y1 > height:
            raise InputError(f"sample for {source}: box {[x0, y0, x1, y1]} lies outside the {width}x{height} image")
        if status not in STATUSES:
            raise InputError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        try:
            settings = _check_settings(settings or {})
        except ValueError as exc:
            raise InputError(f"sample for {source}: {exc}") from None
        sample_id = id if id is not None else f"{len(self.samples):06d}"
        if not _ID_PATTERN.match(sample_id):
            raise InputError(f"sample id {sample_id!r} is not a safe file name")
        if sample_id in self._ids:
            raise InputError(f"sample id {sample_id!r} is used twice")
        image_rel = f"{IMAGES_DIR}/{sample_id}.png"
        mask_rel = f"{MASKS_DIR}/{sample_id}.png"
        # Plain writes are enough here: the whole staging folder is published atomically.
        (self.staging / image_rel).write_bytes(encode_png(image))
        box_mask = _box_mask((x0, y0, x1, y1), height, width)
        if mask is not None:
            mask = np.asarray(mask) > 0
            if mask.shape != (height, width) or (mask & ~box_mask).any():
                raise InputError(f"sample for {source}: the box mask must be {width}x{height} and lie inside "
                                 f"the box {[x0, y0, x1, y1]}")
            box_mask = mask
        (self.staging / mask_rel).write_bytes(encode_png(box_mask))
        final = self.folder.resolve()
        sample = GeneratedSample(
            id=sample_id, image=image_rel, mask=mask_rel, source=str(source), box=(x0, y0, x1, y1),
            defect_kind=defect_kind, seed=int(seed), model=str(model), embedding_hash=str(embedding_hash),
            steps=int(steps), guidance=float(guidance), status=status, settings=settings,
            image_path=final / image_rel, mask_path=final / mask_rel,
        )
        self.samples.append(sample)
        self._ids.add(sample_id)
        return sample

    def add_copy(self, sample: GeneratedSample, *, id: str | None = None,
                 source: str | os.PathLike | None = None) -> GeneratedSample:
        """Write a sample of another set into this one: its image, box mask and every
        provenance field, under a new ``id`` or ``source`` where given (the one place
        that copies a sample field by field, so a new field is never dropped)."""
        return self.add(sample.load_image(), box=sample.box, source=sample.source if source is None else source,
                        defect_kind=sample.defect_kind, seed=sample.seed, model=sample.model,
                        embedding_hash=sample.embedding_hash, steps=sample.steps, guidance=sample.guidance,
                        status=sample.status, id=sample.id if id is None else id, mask=sample.load_mask(),
                        settings=sample.settings)

    def commit(self) -> Path:
        """Write the manifest and move the finished set into place; returns its folder."""
        if self._closed:
            raise RuntimeError("this generated set was already committed or cancelled")
        try:
            (self.staging / MANIFEST_NAME).write_text(_manifest_text(self.samples), encoding="utf-8")
        except BaseException:
            self.cancel()
            raise
        self._closed = True
        self._stack.close()  # staged_directory publishes the folder on a clean exit
        return self.folder

    def cancel(self) -> None:
        """Discard everything written so far; the target folder is left as it was."""
        if self._closed:
            return
        self._closed = True
        # Exiting staged_directory with an exception removes the staging folder.
        self._stack.__exit__(_Discard, _Discard(), None)


class _Discard(Exception):
    """Internal signal that tells staged_directory to drop the staging folder."""



# ----------------------------------------------------------------------------- several sets


def read_generated_sets(folders: Sequence[str | os.PathLike]) -> list[tuple[Path, GeneratedSample]]:
    """The samples of several sets (a category's defect kinds), each with its set folder.

    Naming a set twice is an error: its samples would silently count double.
    """
    seen: dict[Path, str] = {}
    combined: list[tuple[Path, GeneratedSample]] = []
    for folder in folders:
        folder = Path(folder)
        key = folder.resolve()
        if key in seen:
            raise InputError(f"{folder}: the generated set is given twice (also as {seen[key]})")
        seen[key] = str(folder)
        combined += [(folder, sample) for sample in read_generated_set(folder)]
    return combined


def merge_generated_sets(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write one set holding every sample of ``parts``; returns its folder.

    Ids get their defect kind as a prefix (``scratch_000003``) so that sets numbered from
    zero do not clash, and the sample's position too if they still do. A ``source``
    relative to its part's folder is made absolute, since it would not resolve from
    ``out``.
    """
    used: set[str] = set()
    with GeneratedSetWriter(out) as writer:
        for index, (folder, sample) in enumerate(read_generated_sets(parts)):
            source = Path(sample.source)
            if not source.is_absolute() and (folder / source).is_file():
                source = (folder / source).resolve()
            sample_id = f"{sample.defect_kind}_{sample.id}"
            if sample_id in used:
                sample_id = f"{sample.defect_kind}_{index:06d}_{sample.id}"
            used.add(sample_id)
            writer.add_copy(sample, id=sample_id, source=str(source))
    return Path(out)
