"""DRAEM: a discriminatively trained reconstruction embedding for surface anomaly detection."""

from anogen.detection.draem.config import DRAEM_PRESETS, DraemConfig
from anogen.detection.draem.model import DraemDetector

__all__ = ["DRAEM_PRESETS", "DraemConfig", "DraemDetector"]
