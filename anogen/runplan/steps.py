"""The steps of a run, where each one lives, and whether it is done.

Every step owns one folder under ``OUT/steps/<stage>/<category>/<name>/``. It is built
in a staging folder next to it (:func:`anogen.atomic.staged_directory`) and published
with its done marker ``done.json`` in one rename, so the folder either does not exist
or is complete. A staging folder left by a killed run (``.<name>.*.partial``) only
says "running or incomplete"; it is never read, and the step is redone from scratch.

Steps per defect kind (dealt over shards by the kind's position in the plan):
``learn`` (stage 1), ``boxes`` (proposals near the support masks), ``generate``
(stage 2, needs learn and boxes). Steps per category (dealt by the category's
position): ``train`` and ``evaluate`` for the ``baseline`` detector (its own synthetic
anomalies only) and the ``generated`` one (+ every kind's generated set).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anogen.errors import InputError
from anogen.runplan.plan import Plan

DONE_NAME = "done.json"
KIND_STAGES = ("learn", "boxes", "generate")
CATEGORY_STAGES = ("train", "evaluate")
VARIANTS = ("baseline", "generated")

DONE, RUNNING, PENDING, WAITING = "done", "running-or-incomplete", "pending", "waiting"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): it owns the work items whose position
    modulo ``count`` is ``index``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not match:
            raise InputError(f"--shard expects I/N (e.g. 0/4), got {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or not 0 <= index < count:
            raise InputError(f"--shard {text}: needs 0 <= I < N (shards are numbered from 0)")
        return cls(index, count)

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Step:
    stage: str  # learn | boxes | generate | train | evaluate
    category: str
    name: str  # the defect kind, or the detector variant (baseline | generated)
    folder: Path
    position: int  # the kind's or category's position in the plan (how shards are dealt)
    needs: tuple[Step, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.stage} {self.category}/{self.name}"

    @property
    def done_path(self) -> Path:
        return self.folder / DONE_NAME

    def is_done(self) -> bool:
        return self.done_path.is_file()

    def staging_folders(self) -> list[Path]:
        """Staging folders of this step: a run is building it, or one was killed."""
        return sorted(self.folder.parent.glob(f".{self.folder.name}.*.partial"))

    def ready(self) -> bool:
        return all(need.is_done() for need in self.needs)

    def state(self) -> str:
        if self.is_done():
            return DONE
        if self.staging_folders():
            return RUNNING
        return PENDING if self.ready() else WAITING

    def done_record(self) -> dict[str, Any]:
        try:
            data = json.loads(self.done_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def step_folder(out: Path, stage: str, category: str, name: str) -> Path:
    return Path(out) / "steps" / stage / category / name


def build_steps(plan: Plan) -> list[Step]:
    """Every step of ``plan`` in an order that runs each after what it needs: all
    kind steps first (so other shards' training waits as little as possible), then
    per category train and evaluate."""
    steps: list[Step] = []
    generate_of: dict[str, list[Step]] = {c.name: [] for c in plan.categories}
    for position, kind in enumerate(plan.kinds):
        def make(stage: str, needs: tuple[Step, ...] = (), _kind=kind, _position=position) -> Step:
            return Step(stage, _kind.category, _kind.name, step_folder(plan.out, stage, _kind.category, _kind.name),
                        _position, needs)
        learn, boxes = make("learn"), make("boxes")
        generate = make("generate", (learn, boxes))
        steps += [learn, boxes, generate]
        generate_of[kind.category].append(generate)
    for position, category in enumerate(plan.categories):
        for variant in VARIANTS:
            needs = tuple(generate_of[category.name]) if variant == "generated" else ()
            train = Step("train", category.name, variant, step_folder(plan.out, "train", category.name, variant),
                         position, needs)
            evaluate = Step("evaluate", category.name, variant,
                            step_folder(plan.out, "evaluate", category.name, variant), position, (train,))
            steps += [train, evaluate]
    return steps


def steps_of_shard(steps: list[Step], shard: Shard | None) -> list[Step]:
    return [s for s in steps if shard is None or shard.owns(s.position)]
