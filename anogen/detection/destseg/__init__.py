"""DeSTSeg: segmentation-guided denoising student-teacher anomaly detection."""

from anogen.detection.destseg.config import DESTSEG_PRESETS, DestsegConfig
from anogen.detection.destseg.data import destseg_pipeline
from anogen.detection.destseg.model import DestsegDetector
from anogen.detection.registry import DetectorKind


def _build(config: DestsegConfig, *, preset: str = "", for_loading: bool = False) -> DestsegDetector:
    return DestsegDetector(config, for_loading=for_loading, preset=preset)


#: What the registry (:mod:`anogen.detection.registry`) knows about DeSTSeg.
KIND = DetectorKind(name="destseg", config_class=DestsegConfig, build=_build, pipeline=destseg_pipeline)

__all__ = ["DESTSEG_PRESETS", "KIND", "DestsegConfig", "DestsegDetector"]
