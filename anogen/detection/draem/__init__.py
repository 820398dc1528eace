"""DRAEM: a discriminatively trained reconstruction embedding for surface anomaly detection."""

from typing import Any

from anogen.detection.draem.config import DRAEM_PRESETS, DraemConfig
from anogen.detection.draem.data import draem_pipeline
from anogen.detection.draem.model import DraemDetector
from anogen.detection.registry import DetectorKind


def _build(config: DraemConfig, **_: Any) -> DraemDetector:
    return DraemDetector(config)


#: What the registry (:mod:`anogen.detection.registry`) knows about DRAEM.
KIND = DetectorKind(name="draem", config_class=DraemConfig, build=_build, pipeline=draem_pipeline)

__all__ = ["DRAEM_PRESETS", "KIND", "DraemConfig", "DraemDetector"]
