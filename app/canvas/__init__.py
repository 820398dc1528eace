"""The image canvas (QGraphicsView) and its pieces; independent of any file format."""

from app.canvas.boxes import BoxItem, BoxTuple, clamp_box
from app.canvas.history import MaskHistory
from app.canvas.view import ImageCanvas, Tool

__all__ = ["BoxItem", "BoxTuple", "ImageCanvas", "MaskHistory", "Tool", "clamp_box"]
