"""DeSTSeg: segmentation-guided denoising student-teacher anomaly detection."""

from anogen.detection.destseg.config import DESTSEG_PRESETS, DestsegConfig
from anogen.detection.destseg.model import DestsegDetector

__all__ = ["DESTSEG_PRESETS", "DestsegConfig", "DestsegDetector"]
