"""The detector kinds, their configs and presets, by name: the only place that lists them.

    detector = build_detector("draem", preset="quick", overrides={"steps": 200})
    config = config_for("destseg", "paper", {"teacher_weights": "resnet18.pth"})

Each detector lives in its own folder, whose package states one :class:`DetectorKind`
as ``KIND`` (its config class, how to build it, its training-sample recipe).
:data:`DETECTORS` maps a name to that package; adding a detector is its folder plus one
line there. This module imports neither torch nor OpenCV, so the CLI and the GUI read
the names from it before any heavy module loads; a detector's package is imported the
first time its kind is asked for.

Presets are ``quick`` (small widths and resolution so a CPU run takes minutes) and
``paper`` (the reference hyperparameters); any config field can be overridden. Configs are
plain dataclasses that round-trip through JSON with ``to_dict()`` / ``from_dict()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anogen.errors import InputError

if TYPE_CHECKING:
    from anogen.detection.base import Detector
    from anogen.detection.config import DetectorConfig
    from anogen.detection.pipeline import DataPipeline

#: Every detector kind, and the package (its folder) that holds its ``KIND``.
DETECTORS: dict[str, str] = {
    "draem": "anogen.detection.draem",
    "destseg": "anogen.detection.destseg",
}

#: Every detector config has these presets (see :class:`~anogen.detection.config.DetectorConfig`).
PRESETS = ("quick", "paper")


@dataclass(frozen=True)
class DetectorKind:
    """How to make one kind of detector.

    ``config_class``: its config dataclass (a :class:`~anogen.detection.config.DetectorConfig`).
    ``build(config, *, preset, for_loading)``: a new detector from a config; ``for_loading``
    says that a checkpoint's weights come next, so nothing pretrained need be looked up.
    ``pipeline(config, category)``: the recipe its official code uses for training samples.
    """

    name: str
    config_class: type[DetectorConfig]
    build: Callable[..., Detector]
    pipeline: Callable[[Any, str], DataPipeline]


def detector_names() -> tuple[str, ...]:
    return tuple(DETECTORS)


def detector_kind(kind: str) -> DetectorKind:
    if kind not in DETECTORS:
        raise InputError(f"unknown detector '{kind}'; choose one of {', '.join(DETECTORS)}")
    spec = importlib.import_module(DETECTORS[kind]).KIND
    if spec.name != kind:
        raise RuntimeError(f"{DETECTORS[kind]}.KIND is named '{spec.name}', registered as '{kind}'")
    return spec


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise InputError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")


def config_for(kind: str, preset: str = "quick", overrides: dict[str, Any] | None = None) -> Any:
    """The config of ``kind`` for ``preset`` with ``overrides`` applied (validated)."""
    check_preset(preset)
    return detector_kind(kind).config_class.preset(preset).with_overrides(overrides)


def config_from_dict(kind: str, data: dict[str, Any]) -> Any:
    """A config of ``kind`` from its ``to_dict()`` form (for example out of a checkpoint)."""
    return detector_kind(kind).config_class.from_dict(data)


def build_detector(kind: str, preset: str = "quick", overrides: dict[str, Any] | None = None,
                   *, for_loading: bool = False, **context: Any) -> Detector:
    """A new detector of ``kind`` with the ``preset`` config and ``overrides``.

    ``for_loading``: the weights come from a checkpoint next, so nothing pretrained is
    looked up (DeSTSeg's teacher is built random and then overwritten by the state dict).
    Without it, DeSTSeg resolves its teacher weights now: the ``paper`` preset raises
    :class:`~anogen.errors.ModelError` if there are none.
    """
    if context:
        raise TypeError(f"build_detector() got unexpected options {', '.join(sorted(context))}")
    config = config_for(kind, preset, overrides)
    return detector_kind(kind).build(config, preset=preset, for_loading=for_loading)


def detector_from_config(config: Any, *, preset: str = "", for_loading: bool = False) -> Detector:
    """A detector from a ready config object (any registered kind's config class)."""
    return detector_kind(config.kind).build(config, preset=preset, for_loading=for_loading)
