"""The project manifest (``project.json``): its records and their JSON codec.

This module only turns a JSON object into typed records and back, and reports every
structural problem it finds (wrong type, missing field, unknown status, ...). Checks that
need the files on disk (does the image exist, is the box inside it, does a path leave the
project) live in :mod:`anogen.data.workspace`. Like labelme's label file, it is Qt-free
and torch-free so the CLI, the GUI and notebooks share it.

Paths in the manifest are strings relative to the project folder, written with ``/``.
Boxes are :class:`anogen.data.box.Box` objects in pixels, ``x1``/``y1`` exclusive, with
``angle`` for a rotated box and ``defect_kind`` when one is set (both optional). Unknown
keys are ignored so a file edited by hand keeps loading; anything that changes the
meaning of a field bumps :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from anogen.data.box import Box
from anogen.errors import InputError, ProjectFileError

SCHEMA_VERSION = 1
MANIFEST_NAME = "project.json"
SAMPLE_STATUSES = ("pending", "accepted", "rejected")


@dataclass
class SupportImage:
    """One real defect photo of a defect kind and its painted mask (``None`` until painted)."""

    image: str
    mask: str | None = None


@dataclass
class DefectKind:
    """A defect kind learned as one embedding (stage 1) from its support images.

    ``box_size`` is the range of box sizes proposed for this kind, as fractions of the
    image: ``(w_lo, w_hi, h_lo, h_hi)``; ``None`` lets the box proposer decide.
    """

    name: str
    token: str
    support: list[SupportImage] = field(default_factory=list)
    box_size: tuple[float, float, float, float] | None = None
    embedding: str | None = None
    init_word: str = "defect"


@dataclass
class GoodImage:
    """A defect-free image and the boxes drawn on it for generation."""

    image: str
    boxes: list[Box] = field(default_factory=list)


@dataclass
class GeneratedSample:
    """One generated defect with its provenance (stage 2 output)."""

    image: str
    mask: str
    source: str
    box: Box
    defect_kind: str
    seed: int
    status: str = "pending"
    model: str = ""
    embedding_hash: str = ""
    steps: int = 0
    guidance: float = 0.0


@dataclass
class GeneratedSet:
    """A folder of generated samples inside the project."""

    name: str
    folder: str
    samples: list[GeneratedSample] = field(default_factory=list)


@dataclass
class DetectorEntry:
    """A trained detector (DRAEM or DeSTSeg) saved in ``folder`` with its test metrics."""

    name: str
    folder: str
    detector: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Project:
    """Everything ``project.json`` holds."""

    name: str
    model: str = ""  # diffusion model spec: a folder, a Hugging Face id, or a checkpoint file
    linked_datasets: list[str] = field(default_factory=list)
    defect_kinds: list[DefectKind] = field(default_factory=list)
    good_images: list[GoodImage] = field(default_factory=list)
    generated_sets: list[GeneratedSet] = field(default_factory=list)
    detectors: list[DetectorEntry] = field(default_factory=list)
    view: dict[str, Any] = field(default_factory=dict)  # free-form GUI state (zoom, panels)

    def defect_kind(self, name: str) -> DefectKind:
        for kind in self.defect_kinds:
            if kind.name == name:
                return kind
        raise InputError(f"no defect kind named {name!r} in project {self.name!r}")

    def good_image(self, image: str) -> GoodImage:
        for good in self.good_images:
            if good.image == image:
                return good
        raise InputError(f"no good image {image!r} in project {self.name!r}")

    def generated_set(self, name: str) -> GeneratedSet:
        for generated in self.generated_sets:
            if generated.name == name:
                return generated
        raise InputError(f"no generated set named {name!r} in project {self.name!r}")


# ----------------------------------------------------------------------------- encoding

def project_to_dict(project: Project) -> dict[str, Any]:
    """The JSON object written to ``project.json`` (schema version first)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "name": project.name,
        "model": project.model,
        "linked_datasets": list(project.linked_datasets),
        "defect_kinds": [
            {
                "name": kind.name,
                "token": kind.token,
                "init_word": kind.init_word,
                "support": [{"image": s.image, "mask": s.mask} for s in kind.support],
                "box_size": list(kind.box_size) if kind.box_size is not None else None,
                "embedding": kind.embedding,
            }
            for kind in project.defect_kinds
        ],
        "good_images": [
            {"image": good.image, "boxes": [b.to_dict() for b in good.boxes]}
            for good in project.good_images
        ],
        "generated_sets": [
            {
                "name": gen.name,
                "folder": gen.folder,
                "samples": [
                    {
                        "image": s.image, "mask": s.mask, "source": s.source, "box": s.box.to_dict(),
                        "defect_kind": s.defect_kind, "seed": s.seed, "status": s.status, "model": s.model,
                        "embedding_hash": s.embedding_hash, "steps": s.steps, "guidance": s.guidance,
                    }
                    for s in gen.samples
                ],
            }
            for gen in project.generated_sets
        ],
        "detectors": [
            {"name": d.name, "folder": d.folder, "detector": d.detector, "metrics": dict(d.metrics)}
            for d in project.detectors
        ],
        "view": project.view,
    }


# ----------------------------------------------------------------------------- view

# ``view`` is free-form GUI state, but the GUI reads these keys and a value of the wrong
# type (``"panel": []``) crashed it. Each known key maps to its expected JSON type;
# a nested dict maps the keys of that object. Unknown keys are kept as they are.
_SELECTION_SHAPE: dict[str, Any] = {"kind": str, "name": str, "index": int}
_VIEW_SHAPE: dict[str, Any] = {
    "panel": str,
    "tool": str,
    "foreground": str,
    "selection": _SELECTION_SHAPE,
    "canvas": {"zoom": float, "center": "point", "fit": bool, "tool": str, "for": _SELECTION_SHAPE},
    "kind": str,  # the defect kind the panels share (the one just learned, painted, generated)
    # Each panel's job settings, kept per project (app/panels/base.py persist()).
    "settings": {
        "defects": {"steps": int, "lr": float, "seed": int, "batch_size": int, "crop": str, "lr_scaling": str,
                    "device": str},
        "generate": {"steps": int, "guidance": float, "seed": int, "per_box": int, "images": int,
                     "boxes_per_image": int, "feather": int, "crop": str, "device": str, "review": str},
        "train": {"detector": str, "preset": str, "steps": int, "image_size": int, "tau": float, "mix": float,
                  "seed": int, "device": str, "time_limit": str},
    },
}
MAX_VIEW_DEPTH = 32  # GUI state is shallow; a deeper value is not ours, and would strain json.dumps


def _nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in ``value`` (stops counting past ``limit``); iterative,
    so a hostile document cannot exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _shape_problem(value: Any, shape: Any) -> str | None:
    """Why ``value`` does not fit ``shape`` (``None`` when it does)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(shape, dict):
        return None if isinstance(value, dict) else f"expected an object, got {_shown(value)}"
    if shape == "point":
        ok = isinstance(value, list) and len(value) == 2 and all(number(v) for v in value)
        return None if ok else f"expected [x, y] numbers, got {_shown(value)}"
    if shape is float:
        return None if number(value) else f"expected a number, got {_shown(value)}"
    if shape is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected an integer, got {_shown(value)}"
    if shape is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {_shown(value)}"
    return None if isinstance(value, shape) else f"expected {_TYPE_NAMES[shape]}, got {_shown(value)}"


def _clean_view(view: dict[str, Any], where: str, notes: list[str],
                shape: dict[str, Any] | None = None) -> dict[str, Any]:
    """``view`` without the entries of a wrong type or nesting; each one dropped is noted."""
    shape = _VIEW_SHAPE if shape is None else shape
    if shape is _VIEW_SHAPE and _nesting_depth(view, MAX_VIEW_DEPTH) > MAX_VIEW_DEPTH:
        clean: dict[str, Any] = {}
        for key, value in view.items():
            if _nesting_depth(value, MAX_VIEW_DEPTH - 1) > MAX_VIEW_DEPTH - 1:
                notes.append(f"{where}.{key}: nested more than {MAX_VIEW_DEPTH} levels deep (ignored)")
            else:
                clean[key] = value
        view = clean
    clean = {}
    for key, value in view.items():
        expected = shape.get(key)
        problem = _shape_problem(value, expected) if expected is not None else None
        if problem is not None:
            notes.append(f"{where}.{key}: {problem} (ignored)")
            continue
        clean[key] = _clean_view(value, f"{where}.{key}", notes, expected) if isinstance(expected, dict) else value
    return clean


# ----------------------------------------------------------------------------- decoding

_REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object",
               type(None): "null"}


def _shown(value: Any) -> str:
    """A short repr for a message; never the whole of a huge or deeply nested value."""
    if isinstance(value, (dict, list)):
        if not value:
            return repr(value)
        return f"{'an object' if isinstance(value, dict) else 'a list'} of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Reader:
    """Reads typed fields out of JSON objects, collecting problems instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def get(self, obj: dict[str, Any], key: str, types: tuple[type, ...], where: str,
            default: Any = _REQUIRED) -> Any:
        """``obj[key]`` if it has one of ``types``; otherwise record a problem and return None."""
        if key not in obj:
            if default is _REQUIRED:
                self.problem(f"{where}.{key}", "missing")
                return None
            return default() if callable(default) else default
        value = obj[key]
        # bool is an int subclass in Python but never a valid count or coordinate here.
        if isinstance(value, bool) or not isinstance(value, types):
            if float in types and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            self.problem(f"{where}.{key}", f"expected {expected}, got {_shown(value)}")
            return None
        if float in types and isinstance(value, int):
            return float(value)
        return value

    def objects(self, obj: dict[str, Any], key: str, where: str) -> list[tuple[str, dict[str, Any]]]:
        """The JSON objects in list ``obj[key]`` (default empty), each with its location."""
        items = self.get(obj, key, (list,), where, default=list)
        out = []
        for index, item in enumerate(items or []):
            location = f"{where}.{key}[{index}]"
            if isinstance(item, dict):
                out.append((location, item))
            else:
                self.problem(location, f"expected an object, got {type(item).__name__}")
        return out


def _read_box(reader: _Reader, value: Any, where: str) -> Box | None:
    """A box in the object form (:meth:`Box.decode_dict`); ``[x0, y0, x1, y1]`` or
    ``[x0, y0, x1, y1, angle]`` is accepted too (the generated-set format)."""
    if isinstance(value, list):
        if len(value) not in (4, 5):
            reader.problem(where, f"expected [x0, y0, x1, y1] or [x0, y0, x1, y1, angle], got {_shown(value)}")
            return None
        value = dict(zip(("x0", "y0", "x1", "y1", "angle"), value))
    box, problems = Box.decode_dict(value)
    for key, message in problems:
        reader.problem(f"{where}.{key}" if key else where, message)
    return box


def _read_defect_kind(reader: _Reader, obj: dict[str, Any], where: str) -> DefectKind | None:
    before = len(reader.problems)
    name = reader.get(obj, "name", (str,), where)
    token = reader.get(obj, "token", (str,), where)
    init_word = reader.get(obj, "init_word", (str,), where, default="defect")
    embedding = reader.get(obj, "embedding", (str, type(None)), where, default=None)
    support = []
    for location, item in reader.objects(obj, "support", where):
        image = reader.get(item, "image", (str,), location)
        mask = reader.get(item, "mask", (str, type(None)), location, default=None)
        support.append(SupportImage(image=image, mask=mask))
    box_size = reader.get(obj, "box_size", (list, type(None)), where, default=None)
    if box_size is not None:
        valid = (len(box_size) == 4
                 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box_size))
        if not valid or not (0 < box_size[0] <= box_size[1] <= 1 and 0 < box_size[2] <= box_size[3] <= 1):
            reader.problem(f"{where}.box_size",
                           "expected [w_lo, w_hi, h_lo, h_hi] fractions with 0 < lo <= hi <= 1, "
                           f"got {_shown(box_size)}")
        else:
            box_size = tuple(float(v) for v in box_size)
    if len(reader.problems) > before:
        return None
    return DefectKind(name=name, token=token, support=support, box_size=box_size,
                      embedding=embedding, init_word=init_word)


def _read_sample(reader: _Reader, obj: dict[str, Any], where: str) -> GeneratedSample | None:
    before = len(reader.problems)
    values = {
        "image": reader.get(obj, "image", (str,), where),
        "mask": reader.get(obj, "mask", (str,), where),
        "source": reader.get(obj, "source", (str,), where),
        "defect_kind": reader.get(obj, "defect_kind", (str,), where),
        "seed": reader.get(obj, "seed", (int,), where),
        "status": reader.get(obj, "status", (str,), where, default="pending"),
        "model": reader.get(obj, "model", (str,), where, default=""),
        "embedding_hash": reader.get(obj, "embedding_hash", (str,), where, default=""),
        "steps": reader.get(obj, "steps", (int,), where, default=0),
        "guidance": reader.get(obj, "guidance", (float,), where, default=0.0),
    }
    box = _read_box(reader, obj["box"], f"{where}.box") if "box" in obj else None
    if "box" not in obj:
        reader.problem(f"{where}.box", "missing")
    if values["status"] is not None and values["status"] not in SAMPLE_STATUSES:
        reader.problem(f"{where}.status", f"expected one of {', '.join(SAMPLE_STATUSES)}, got {values['status']!r}")
    if len(reader.problems) > before or box is None:
        return None
    return GeneratedSample(box=box, **values)


def decode_project(data: Any, source: str = MANIFEST_NAME,
                   notes: list[str] | None = None) -> tuple[Project, list[str]]:
    """Decode a manifest as far as possible: the records that decode, and every problem.

    Records with problems are left out of the returned project so that the file checks
    of :mod:`anogen.data.workspace` can still run on the rest and report their problems
    too. A wrong or newer ``schema_version`` raises :class:`ProjectFileError` at once.
    GUI state in ``view`` that has the wrong shape is dropped, not fatal; each dropped
    entry is appended to ``notes``, naming the field.
    """
    reader = _Reader()
    if not isinstance(data, dict):
        raise ProjectFileError(source, [f"expected a JSON object at the top level, got {type(data).__name__}"])
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProjectFileError(source, [f"schema_version: expected an integer, got {_shown(version)}"])
    if version > SCHEMA_VERSION:
        raise ProjectFileError(source, [f"schema_version {version} was written by a newer AnoGen; "
                                        f"this version reads up to {SCHEMA_VERSION}"])
    if version < 1:
        raise ProjectFileError(source, [f"schema_version: {version} is not a valid version"])

    where = "project"
    name = reader.get(data, "name", (str,), where) or ""
    model = reader.get(data, "model", (str,), where, default="") or ""
    linked = []
    for index, folder in enumerate(reader.get(data, "linked_datasets", (list,), where, default=list) or []):
        if isinstance(folder, str):
            linked.append(folder)
        else:
            reader.problem(f"{where}.linked_datasets[{index}]", f"expected a string, got {_shown(folder)}")
    view = _clean_view(reader.get(data, "view", (dict,), where, default=dict) or {}, f"{where}.view",
                       notes if notes is not None else [])

    kinds = [_read_defect_kind(reader, obj, loc) for loc, obj in reader.objects(data, "defect_kinds", where)]

    good_images = []
    for location, obj in reader.objects(data, "good_images", where):
        image = reader.get(obj, "image", (str,), location)
        boxes_value = reader.get(obj, "boxes", (list,), location, default=list) or []
        boxes = [_read_box(reader, b, f"{location}.boxes[{i}]") for i, b in enumerate(boxes_value)]
        if image is not None:
            good_images.append(GoodImage(image=image, boxes=[b for b in boxes if b is not None]))

    generated_sets = []
    for location, obj in reader.objects(data, "generated_sets", where):
        set_name = reader.get(obj, "name", (str,), location)
        folder = reader.get(obj, "folder", (str,), location)
        samples = [_read_sample(reader, s, loc) for loc, s in reader.objects(obj, "samples", location)]
        if set_name is not None and folder is not None:
            generated_sets.append(GeneratedSet(name=set_name, folder=folder,
                                               samples=[s for s in samples if s is not None]))

    detectors = []
    for location, obj in reader.objects(data, "detectors", where):
        before = len(reader.problems)
        values = {key: reader.get(obj, key, (str,), location) for key in ("name", "folder", "detector")}
        metrics = reader.get(obj, "metrics", (dict,), location, default=dict) or {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                reader.problem(f"{location}.metrics.{key}", f"expected a number, got {_shown(value)}")
        if len(reader.problems) == before:
            detectors.append(DetectorEntry(metrics={k: float(v) for k, v in metrics.items()}, **values))

    project = Project(name=name, model=model, linked_datasets=linked,
                      defect_kinds=[k for k in kinds if k is not None], good_images=good_images,
                      generated_sets=generated_sets, detectors=detectors, view=view)
    return project, reader.problems


def project_from_dict(data: Any, source: str = MANIFEST_NAME) -> Project:
    """Decode a manifest; raise :class:`ProjectFileError` listing every problem found."""
    project, problems = decode_project(data, source)
    if problems:
        raise ProjectFileError(source, problems)
    return project
