"""A run plan: which model, categories and defect kinds ``anogen run`` works through.

A plan is a TOML file (read with :mod:`tomllib`)::

    model = "runwayml/stable-diffusion-v1-5"   # diffusers folder, HF id (cache) or file
    out = "runs/mvtec"                          # default: <plan name>-run next to the plan
    preset = "paper"                            # default | paper (learn, generate, detector)
    detector = "draem"                          # draem | destseg
    shots = 3                                   # support images per kind (first N masked)

    [learn]                                     # LearnConfig fields, e.g. steps = 6100
    [boxes]                                     # foreground, rule, min_iou, min_inside, prior
    [generate]                                  # GenerateConfig fields + per_image, limit
    [train]                                     # preset, steps, overrides, tau, mix, protocol

    [[categories]]
    name = "bottle"
    path = "/data/mvtec/bottle"                 # an MVTec AD category folder
    kinds = "all"                               # or ["broken_large", {name = "contamination",
                                                #   images = [...], masks = [...]}]

Relative paths are read from the plan's folder. Everything is checked when the plan is
loaded, and every error names the key (``categories[2].kinds[0].masks``), so a typo
fails in a second instead of after hours of stage 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anogen.errors import InputError

PLAN_PRESETS = ("default", "paper")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

TOP_KEYS = {"model", "out", "preset", "detector", "seed", "device", "precision", "shots",
            "learn", "boxes", "generate", "train", "categories"}

# Per section: the keys a plan may set and the Python types they take. The values go
# to the library's own config dataclasses, which keep their defaults for the rest.
LEARN_KEYS: dict[str, tuple[type, ...]] = {
    "steps": (int,), "batch_size": (int,), "lr": (int, float), "scale_lr": (bool,), "init_word": (str,),
    "resolution": (int,), "crop_to_defect": (str,), "context_margin": (int, float),
    "area_normalised": (bool,), "use_mask": (bool,), "flip": (bool,), "checkpoint_every": (int,),
    "gradient_checkpointing": (bool,),
}
BOXES_KEYS: dict[str, tuple[type, ...]] = {
    "foreground": (str,), "rule": (str,), "min_iou": (int, float), "min_inside": (int, float),
    "max_tries": (int,), "prior": (str,),
}
GENERATE_KEYS: dict[str, tuple[type, ...]] = {
    "steps": (int,), "guidance": (int, float), "eta": (int, float), "prompt": (str,), "negative_prompt": (str,),
    "feather": (int,), "crop": (str,), "context_margin": (int, float), "batch_size": (int,),
    "per_image": (int,), "samples_per_box": (int,), "limit": (int,),
}
TRAIN_KEYS: dict[str, tuple[type, ...]] = {
    "preset": (str,), "steps": (int,), "overrides": (dict,), "tau": (int, float), "mix": (int, float),
    "synthesis": (str,), "weak_all": (bool,), "protocol": (str,), "validate_every": (int,),
    "teacher": (str,), "textures": (str,),
}
CATEGORY_KEYS = {"name", "path", "kinds", "shots"}
KIND_KEYS = {"name", "shots", "images", "masks"}
BOX_PRIORS = ("support", "none")  # support: boxes go near the support masks of the kind


@dataclass
class KindPlan:
    """One defect kind of a category and its support set (images with pixel masks)."""

    category: str
    name: str
    images: list[Path]
    masks: list[Path]

    @property
    def key(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass
class CategoryPlan:
    name: str
    path: Path  # an MVTec AD category folder
    kinds: list[KindPlan]

    @property
    def support_images(self) -> list[Path]:
        """Every kind's support images: kept out of validation and evaluation."""
        return [image for kind in self.kinds for image in kind.images]


@dataclass
class Plan:
    """A checked plan. ``learn``/``boxes``/``generate``/``train`` hold the settings the
    plan gave (the presets fill in the rest when each step builds its config)."""

    source: Path
    out: Path
    model: str
    categories: list[CategoryPlan]
    preset: str = "default"
    detector: str = "draem"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    learn: dict[str, Any] = field(default_factory=dict)
    boxes: dict[str, Any] = field(default_factory=dict)
    generate: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> list[KindPlan]:
        """Every defect kind, in plan order (the order shards are dealt in)."""
        return [kind for category in self.categories for kind in category.kinds]

    def category(self, name: str) -> CategoryPlan:
        return next(c for c in self.categories if c.name == name)

    @property
    def detector_preset(self) -> str:
        return str(self.train.get("preset", "paper" if self.preset == "paper" else "quick"))

    @property
    def protocol(self) -> str:
        return str(self.train.get("protocol", "paper" if self.preset == "paper" else "holdout"))

    def settings_digest(self, section: str, **extra: Any) -> str:
        """A short fingerprint of what a step of ``section`` depends on (recorded in its
        done marker, so ``--status`` can say a finished step used other settings)."""
        body = {"model": self.model, "preset": self.preset, "seed": self.seed, "detector": self.detector,
                section: getattr(self, section), **extra}
        text = json.dumps(body, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def _where(path: Path, key: str) -> str:
    return f"{path.name}: {key}"


def _refuse_unknown(plan_path: Path, prefix: str, table: dict[str, Any], known: Collection[str]) -> None:
    """A misspelt setting is an error naming it, never silently ignored."""
    unknown = sorted(set(table) - set(known))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise InputError(f"{_where(plan_path, where)} is not a known setting; known: {', '.join(sorted(known))}")


def _check_type(plan_path: Path, key: str, value: Any, types: tuple[type, ...]) -> None:
    # TOML booleans are Python bools, which are also ints: keep them apart.
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = "a number" if float in types else " or ".join(t.__name__ for t in types)
        raise InputError(f"{_where(plan_path, key)} must be {names}, got {type(value).__name__} {value!r}")


def _check_section(plan_path: Path, name: str, table: Any, allowed: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise InputError(f"{_where(plan_path, name)} must be a table ([{name}]), got {type(table).__name__}")
    _refuse_unknown(plan_path, name, table, allowed)
    for key, value in table.items():
        _check_type(plan_path, f"{name}.{key}", value, allowed[key])
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise InputError(f"{_where(plan_path, f'{name}.{key}')} must not be negative, got {value}")
    for key in ("steps", "batch_size", "per_image", "samples_per_box", "limit", "max_tries", "checkpoint_every",
                "validate_every"):
        if key in table and table[key] < 1:
            raise InputError(f"{_where(plan_path, f'{name}.{key}')} must be at least 1, got {table[key]}")
    return dict(table)


def _resolve(base: Path, text: str) -> Path:
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else (base / path)


def _support_from_test_set(plan_path: Path, key: str, category_dir: Path, kind: str,
                           shots: int) -> tuple[list[Path], list[Path]]:
    """The first ``shots`` masked test images of ``kind`` (by file name), as the demo does."""
    from anogen.data.datasets import read_mvtec_category

    records = [r for r in read_mvtec_category(category_dir).test if r.defect_kind == kind and r.mask_path]
    if not records:
        raise InputError(f"{_where(plan_path, key)}: {category_dir} has no masked test images of kind '{kind}'")
    if len(records) < shots:
        raise InputError(f"{_where(plan_path, key)}: kind '{kind}' has {len(records)} masked test images, "
                         f"fewer than shots = {shots}")
    chosen = records[:shots]
    return [r.path for r in chosen], [r.mask_path for r in chosen if r.mask_path is not None]


def _load_kind(plan_path: Path, base: Path, key: str, entry: Any, category: str, category_dir: Path,
               shots: int) -> KindPlan:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise InputError(f"{_where(plan_path, key)} must be a kind name or a table, got {type(entry).__name__}")
    _refuse_unknown(plan_path, key, entry, KIND_KEYS)
    name = entry.get("name")
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise InputError(f"{_where(plan_path, f'{key}.name')} must be a folder-safe name (letters, digits, . _ -), "
                         f"got {name!r}")
    if ("images" in entry) != ("masks" in entry):
        missing = "masks" if "images" in entry else "images"
        raise InputError(f"{_where(plan_path, f'{key}.{missing}')} is missing: give images and masks together")
    if "images" in entry:
        lists = {}
        for which in ("images", "masks"):
            value = entry[which]
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise InputError(f"{_where(plan_path, f'{key}.{which}')} must be a non-empty list of paths")
            paths = [_resolve(base, v) for v in value]
            for number, path in enumerate(paths):
                if not path.is_file():
                    raise InputError(f"{_where(plan_path, f'{key}.{which}[{number}]')}: {path} not found")
            lists[which] = paths
        if len(lists["images"]) != len(lists["masks"]):
            raise InputError(f"{_where(plan_path, key)}: {len(lists['images'])} images but "
                             f"{len(lists['masks'])} masks; give one mask per image")
        return KindPlan(category, name, lists["images"], lists["masks"])
    kind_shots = entry.get("shots", shots)
    _check_type(plan_path, f"{key}.shots", kind_shots, (int,))
    if kind_shots < 1:
        raise InputError(f"{_where(plan_path, f'{key}.shots')} must be at least 1, got {kind_shots}")
    images, masks = _support_from_test_set(plan_path, key, category_dir, name, kind_shots)
    return KindPlan(category, name, images, masks)


def _load_category(plan_path: Path, base: Path, index: int, entry: Any, shots: int) -> CategoryPlan:
    from anogen.data.datasets import read_mvtec_category

    key = f"categories[{index}]"
    if not isinstance(entry, dict):
        raise InputError(f"{_where(plan_path, key)} must be a table ([[categories]])")
    _refuse_unknown(plan_path, key, entry, CATEGORY_KEYS)
    path_text = entry.get("path")
    if not isinstance(path_text, str):
        raise InputError(f"{_where(plan_path, f'{key}.path')} is required: the category's MVTec AD folder")
    path = _resolve(base, path_text)
    if not (path / "train" / "good").is_dir():
        raise InputError(f"{_where(plan_path, f'{key}.path')}: {path} is not an MVTec AD category "
                         "(no train/good folder)")
    name = entry.get("name", path.name)
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise InputError(f"{_where(plan_path, f'{key}.name')} must be a folder-safe name, got {name!r}")
    category_shots = entry.get("shots", shots)
    _check_type(plan_path, f"{key}.shots", category_shots, (int,))
    kinds_entry = entry.get("kinds", "all")
    if kinds_entry == "all":
        kinds_entry = read_mvtec_category(path).defect_kinds
        if not kinds_entry:
            raise InputError(f"{_where(plan_path, f'{key}.kinds')}: {path} has no defect kinds under test/")
    if not isinstance(kinds_entry, list) or not kinds_entry:
        raise InputError(f"{_where(plan_path, f'{key}.kinds')} must be \"all\" or a non-empty list")
    kinds = [_load_kind(plan_path, base, f"{key}.kinds[{i}]", item, name, path, category_shots)
             for i, item in enumerate(kinds_entry)]
    names = [k.name for k in kinds]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(f"{_where(plan_path, f'{key}.kinds')} names '{duplicate}' twice")
    return CategoryPlan(name, path, kinds)


def parse_plan(data: dict[str, Any], source: Path) -> Plan:
    """A checked :class:`Plan` from the parsed TOML ``data`` of the file ``source``."""
    from anogen.detection.options import PROTOCOLS, SYNTHESIS_METHODS
    from anogen.detection.registry import DETECTORS, PRESETS

    source = Path(source)
    base = source.resolve().parent
    _refuse_unknown(source, "", data, TOP_KEYS)
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InputError(f"{_where(source, 'model')} is required: a diffusers folder, Hugging Face id or checkpoint")
    # A folder or file next to the plan; anything else (a Hugging Face id) goes to the loader as written.
    candidate = _resolve(base, model)
    resolved_model = str(candidate) if candidate.exists() else model
    for key, types in (("out", (str,)), ("preset", (str,)), ("detector", (str,)), ("seed", (int,)),
                       ("device", (str,)), ("precision", (str,)), ("shots", (int,))):
        if key in data:
            _check_type(source, key, data[key], types)
    preset = data.get("preset", "default")
    if preset not in PLAN_PRESETS:
        raise InputError(f"{_where(source, 'preset')} must be one of {', '.join(PLAN_PRESETS)}, got {preset!r}")
    detector = data.get("detector", "draem")
    if detector not in DETECTORS:
        raise InputError(f"{_where(source, 'detector')} must be one of {', '.join(DETECTORS)}, got {detector!r}")
    shots = data.get("shots", 3)
    if shots < 1:
        raise InputError(f"{_where(source, 'shots')} must be at least 1, got {shots}")

    learn = _check_section(source, "learn", data.get("learn"), LEARN_KEYS)
    boxes = _check_section(source, "boxes", data.get("boxes"), BOXES_KEYS)
    generate = _check_section(source, "generate", data.get("generate"), GENERATE_KEYS)
    train = _check_section(source, "train", data.get("train"), TRAIN_KEYS)
    if "prior" in boxes and boxes["prior"] not in BOX_PRIORS:
        raise InputError(f"{_where(source, 'boxes.prior')} must be one of {', '.join(BOX_PRIORS)}")
    for key, choices in (("preset", PRESETS), ("protocol", PROTOCOLS), ("synthesis", SYNTHESIS_METHODS)):
        if key in train and train[key] not in choices:
            raise InputError(f"{_where(source, f'train.{key}')} must be one of {', '.join(choices)}, "
                             f"got {train[key]!r}")
    for key in ("teacher", "textures"):
        if key in train:
            train[key] = str(_resolve(base, train[key]))

    entries = data.get("categories")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{_where(source, 'categories')} is required: one [[categories]] table per category")
    categories = [_load_category(source, base, i, entry, shots) for i, entry in enumerate(entries)]
    names = [c.name for c in categories]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(f"{_where(source, 'categories')} names '{duplicate}' twice")
    out = _resolve(base, data["out"]) if "out" in data else base / f"{source.stem}-run"
    return Plan(source=source, out=out, model=resolved_model, categories=categories, preset=preset,
                detector=detector, seed=data.get("seed", 0), device=data.get("device", "auto"),
                precision=data.get("precision", "auto"), learn=learn, boxes=boxes, generate=generate, train=train)


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and check the plan file ``path``; raises :class:`InputError` naming the key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: plan file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: not a valid TOML file ({exc})") from None
    return parse_plan(data, path)
