"""Detector checkpoints: safetensors weights plus a JSON file that says how to rebuild them.

A training run writes an output folder with two checkpoints::

    <out>/best/   the checkpoint with the best validation score so far
    <out>/last/   the latest checkpoint, plus ``training_state.pt`` to resume from
    <out>/history.jsonl   one line per logged step / validation (loss curves)

Each checkpoint folder holds:

* ``model.safetensors``: every tensor of the detector (a DeSTSeg teacher included, so a
  checkpoint never needs the teacher weights again);
* ``detector.json``: the detector kind, preset and full config, the input size, the
  image threshold (F1-max on validation) and score normalisation, the validation
  metrics, and the training provenance (seed, tau, mix, generated set, exclusions).

Each folder is written in a staging folder and moved into place whole
(:func:`anogen.atomic.staged_directory`), so a crash or cancel never leaves a
checkpoint whose weights and JSON disagree. Loading uses safetensors, and the training
state uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anogen.atomic import atomic_write_text, staged_directory
from anogen.detection.base import Detector
from anogen.detection.options import CHECKPOINT_CHOICES
from anogen.errors import InputError, ModelError
from anogen.outputs import read_marker

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "detector.json"
STATE_NAME = "training_state.pt"
FORMAT = "anogen-detector"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


@dataclass
class ScoreCalibration:
    """Turns raw image scores into a decision and a 0..1 score, from validation.

    ``threshold`` is the image-score threshold that maximised F1 on the validation
    split. The normalised score maps ``threshold`` to 0.5 and spreads the validation
    score range around it (min-max), clipped to [0, 1]. ``pixel_threshold`` is the
    pixel-level F1-max threshold of the anomaly map (for drawing a defect outline).
    """

    threshold: float
    score_min: float
    score_max: float
    pixel_threshold: float = 0.5

    def normalise(self, scores: np.ndarray | float) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        span = max(self.score_max - self.score_min, 1e-12)
        return np.clip((scores - self.threshold) / span + 0.5, 0.0, 1.0)

    def to_dict(self) -> dict[str, float]:
        return {"threshold": float(self.threshold), "score_min": float(self.score_min),
                "score_max": float(self.score_max), "pixel_threshold": float(self.pixel_threshold)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreCalibration:
        return cls(threshold=float(data["threshold"]), score_min=float(data["score_min"]),
                   score_max=float(data["score_max"]), pixel_threshold=float(data.get("pixel_threshold", 0.5)))


@dataclass
class CheckpointInfo:
    """Everything in ``detector.json``."""

    kind: str
    preset: str
    config: dict[str, Any]
    image_size: int
    calibration: ScoreCalibration
    step: int
    total_steps: int
    validation: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "preset": self.preset,
            "image_size": int(self.image_size),
            "config": self.config,
            "calibration": self.calibration.to_dict(),
            "step": int(self.step),
            "total_steps": int(self.total_steps),
            "validation": self.validation,
            "provenance": self.provenance,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> CheckpointInfo:
        if data.get("format") != FORMAT:
            raise ModelError(f"{where}: not an anogen detector checkpoint")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelError(f"{where}: written by a newer anogen (format {data['format_version']}); update anogen")
        try:
            return cls(kind=str(data["kind"]), preset=str(data["preset"]), config=dict(data["config"]),
                       image_size=int(data["image_size"]),
                       calibration=ScoreCalibration.from_dict(data["calibration"]),
                       step=int(data["step"]), total_steps=int(data["total_steps"]),
                       validation=dict(data.get("validation") or {}),
                       provenance=dict(data.get("provenance") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: damaged checkpoint description ({exc.__class__.__name__}: {exc})") from None


def save_checkpoint(folder: str | os.PathLike, detector: Detector, info: CheckpointInfo,
                    training_state: dict[str, Any] | None = None) -> Path:
    """Write one checkpoint folder atomically (weights, description, optional resume state)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    with staged_directory(folder) as staging:
        save_model(detector, str(staging / WEIGHTS_NAME), metadata={"format": FORMAT, "kind": info.kind})
        if training_state is not None:
            torch.save(training_state, staging / STATE_NAME)
        # The description goes last and atomically: a staging folder that holds it is
        # complete, which is what recover_checkpoint relies on after a kill.
        atomic_write_text(staging / CONFIG_NAME, json.dumps(info.to_json(), indent=2) + "\n")
    return folder


def _leftovers(folder: Path) -> list[Path]:
    """Copies of ``folder`` a kill during :func:`staged_directory` can leave: the new one
    still under its staging name, and the previous one moved aside."""
    found = sorted(folder.parent.glob(f".{folder.name}.*.partial"))
    old = folder.with_name(f".{folder.name}.old")
    return found + ([old] if old.is_dir() else [])


def _complete_step(candidate: Path) -> int | None:
    """The step of a complete checkpoint folder, or None when it is partial or damaged."""
    if not (candidate / WEIGHTS_NAME).is_file():
        return None
    try:
        return int(json.loads((candidate / CONFIG_NAME).read_text(encoding="utf-8"))["step"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def recoverable_checkpoint(folder: str | os.PathLike) -> Path | None:
    """When ``folder`` is missing, the newest complete copy a kill left next to it."""
    folder = Path(folder)
    if folder.exists():
        return None
    steps = {candidate: step for candidate in _leftovers(folder) if (step := _complete_step(candidate)) is not None}
    return max(steps, key=lambda c: steps[c]) if steps else None


def recover_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Finish a publish that a kill interrupted.

    Publishing a checkpoint moves the old folder aside and then renames the new one into
    place; a kill in between leaves no ``folder`` but a complete copy under a hidden
    name. The newest complete copy becomes ``folder`` again (one rename) and the other
    leftovers go. Returns the recovered folder, or None when there was nothing to do.
    """
    folder = Path(folder)
    chosen = recoverable_checkpoint(folder)
    if chosen is None:
        return None
    os.replace(chosen, folder)
    for leftover in _leftovers(folder):
        shutil.rmtree(leftover, ignore_errors=True)
    log.warning("%s: recovered the checkpoint an interrupted run left in %s", folder, chosen.name)
    return folder


def checkpoint_folder(folder: str | os.PathLike, which: str = "best") -> Path:
    """The checkpoint folder inside a training output folder (or ``folder`` itself)."""
    folder = Path(folder)
    if which not in CHECKPOINT_CHOICES:
        raise InputError(f"unknown checkpoint '{which}'; choose one of {', '.join(CHECKPOINT_CHOICES)}")
    if (folder / CONFIG_NAME).is_file():
        return folder
    if not folder.is_dir():
        raise InputError(f"{folder}: detector folder not found")
    candidate = folder / which
    if (candidate / CONFIG_NAME).is_file():
        return candidate
    if which == "best" and (folder / "last" / CONFIG_NAME).is_file():
        # A run stopped before its last phase (DeSTSeg's head) has no best checkpoint yet.
        log.warning("%s: no best checkpoint yet (training stopped early); using the last one", folder)
        return folder / "last"
    left = recoverable_checkpoint(candidate) or recoverable_checkpoint(folder / "last")
    if left is not None:
        raise InputError(f"{folder}: incomplete: a kill interrupted saving a checkpoint (a complete copy is in "
                         f"{left.name}); resume with 'anogen train --resume' to recover it")
    if (read_marker(folder) or {}).get("command") == "train":
        # A run killed before it saved its first checkpoint: nothing to use or resume.
        raise InputError(f"{folder}: incomplete: the training run stopped before its first checkpoint; run "
                         "'anogen train' again")
    raise InputError(f"{folder}: no '{which}' checkpoint here (expected {candidate / CONFIG_NAME}); "
                     "is this the --out folder of 'anogen train'?")


@dataclass
class RunStatus:
    """How far the training run behind a checkpoint got (from its ``last/`` checkpoint,
    the one a run writes last: it reaches ``total_steps`` only when the run finished)."""

    step: int
    total_steps: int

    @property
    def complete(self) -> bool:
        return self.step >= self.total_steps

    def describe(self) -> str:
        if self.complete:
            return f"complete: step {self.step} of {self.total_steps}"
        return f"incomplete: step {self.step} of {self.total_steps}, resume with --resume"


def run_status(folder: str | os.PathLike, which: str = "best") -> RunStatus | None:
    """The status of the run a checkpoint belongs to, or None when it cannot be told
    (a ``best/`` folder copied out of its run)."""
    where = checkpoint_folder(folder, which)
    if where.name in CHECKPOINT_CHOICES and (where.parent / "last" / CONFIG_NAME).is_file():
        last = where.parent / "last"
    elif (where / STATE_NAME).is_file():
        last = where  # a last checkpoint on its own still knows whether its run finished
    else:
        return None
    info = read_checkpoint_info(last)
    return RunStatus(step=info.step, total_steps=info.total_steps)


def require_complete_run(folder: str | os.PathLike, which: str = "best", allow_incomplete: bool = False) -> \
        str | None:
    """Refuse the checkpoint of a run that did not finish (a killed or cancelled ``train``).

    With ``allow_incomplete`` it returns a warning to show instead; None when complete.
    """
    status = run_status(folder, which)
    if status is None or status.complete:
        return None
    message = f"{folder}: {status.describe()}"
    if not allow_incomplete:
        raise InputError(f"{message} (or pass --allow-incomplete to use it as it is)")
    return message


def read_checkpoint_info(folder: str | os.PathLike, which: str = "best") -> CheckpointInfo:
    path = checkpoint_folder(folder, which) / CONFIG_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read ({exc})") from None
    return CheckpointInfo.from_json(data, path)


def build_empty_detector(info: CheckpointInfo) -> Detector:
    """A detector with the checkpoint's architecture, before its weights are loaded.

    No teacher weights are looked up (``for_loading``): the checkpoint carries them.
    """
    from anogen.detection.registry import config_from_dict, detector_from_config

    try:
        config = config_from_dict(info.kind, info.config)
    except InputError as exc:
        raise ModelError(f"the checkpoint's {info.kind} config does not fit this anogen version ({exc})") from None
    return detector_from_config(config, preset=info.preset, for_loading=True)


def load_weights(detector: Detector, folder: Path, device: torch.device) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelError(f"{folder}: {WEIGHTS_NAME} is missing")
    try:
        load_model(detector, str(weights), strict=True, device=str(device))
    except SafetensorError as exc:  # garbage or a truncated copy
        raise ModelError(f"{weights}: not a readable safetensors file ({str(exc).splitlines()[0]}); "
                         "the checkpoint is damaged") from None
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"{weights}: weights do not fit the {detector.kind} detector described in "
                         f"{CONFIG_NAME} ({str(exc).splitlines()[0]})") from None


@dataclass
class LoadedDetector:
    """A detector ready for inference, with what is needed to interpret its output."""

    detector: Detector
    info: CheckpointInfo
    folder: Path
    device: torch.device

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def calibration(self) -> ScoreCalibration:
        return self.info.calibration


def load_detector(folder: str | os.PathLike, which: str = "best",
                  device: torch.device | str = "auto") -> LoadedDetector:
    """Load a trained detector for inference (eval mode, on ``device``)."""
    from anogen.device import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    where = checkpoint_folder(folder, which)
    info = read_checkpoint_info(where)
    detector = build_empty_detector(info)
    load_weights(detector, where, torch.device("cpu"))
    detector.to(device).eval()
    return LoadedDetector(detector=detector, info=info, folder=where, device=device)


def load_training_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_NAME
    if not path.is_file():
        raise InputError(f"{folder}: cannot resume, {STATE_NAME} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many kinds of errors
        raise ModelError(f"{path}: cannot read the training state ({exc.__class__.__name__}: {exc})") from None
