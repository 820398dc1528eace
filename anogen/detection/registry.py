"""The detector kinds, their configs and presets, by name.

    detector = build_detector("draem", preset="quick", overrides={"steps": 200})
    config = config_for("destseg", "paper", {"teacher_weights": "resnet18.pth"})

Presets are ``paper`` (the reference hyperparameters) and ``quick`` (small widths and
resolution so a CPU run takes minutes); any config field can be overridden. Configs are
plain dataclasses that round-trip through JSON with ``to_dict()`` / ``from_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from anogen.detection.base import Detector
from anogen.detection.pipeline import DataPipeline
from anogen.errors import InputError

PRESETS = ("paper", "quick")


@dataclass(frozen=True)
class DetectorKind:
    """How to make one kind of detector: its config class, its module class, and the
    recipe its official code uses for training samples (``pipeline(config, category)``)."""

    name: str
    config_class: type
    detector_class: type[Detector]
    build: Callable[..., Detector]
    pipeline: Callable[[Any, str], DataPipeline]


def _build_draem(config: Any, *, preset: str = "", for_loading: bool = False) -> Detector:
    from anogen.detection.draem.model import DraemDetector

    return DraemDetector(config)


def _build_destseg(config: Any, *, preset: str = "", for_loading: bool = False) -> Detector:
    from anogen.detection.destseg.model import DestsegDetector

    return DestsegDetector(config, for_loading=for_loading, preset=preset)


def _kinds() -> dict[str, DetectorKind]:
    from anogen.detection.destseg.config import DestsegConfig
    from anogen.detection.destseg.data import destseg_pipeline
    from anogen.detection.destseg.model import DestsegDetector
    from anogen.detection.draem.config import DraemConfig
    from anogen.detection.draem.data import draem_pipeline
    from anogen.detection.draem.model import DraemDetector

    return {
        "draem": DetectorKind("draem", DraemConfig, DraemDetector, _build_draem, draem_pipeline),
        "destseg": DetectorKind("destseg", DestsegConfig, DestsegDetector, _build_destseg, destseg_pipeline),
    }


DETECTORS: dict[str, DetectorKind] = _kinds()


def detector_kind(kind: str) -> DetectorKind:
    if kind not in DETECTORS:
        raise InputError(f"unknown detector '{kind}'; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[kind]


def config_for(kind: str, preset: str = "quick", overrides: dict[str, Any] | None = None) -> Any:
    """The config of ``kind`` for ``preset`` with ``overrides`` applied (validated)."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
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
    """A detector from a ready config object (a :class:`DraemConfig` or :class:`DestsegConfig`)."""
    return detector_kind(config.kind).build(config, preset=preset, for_loading=for_loading)
