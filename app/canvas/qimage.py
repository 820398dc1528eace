"""Turning numpy arrays into QImage/QPixmap for display (and back, for tests)."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage, QPixmap


def rgb_to_qimage(array: np.ndarray) -> QImage:
    """An RGB ``(H, W, 3)`` or grey ``(H, W)`` uint8 array as a QImage that owns its pixels."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        h, w = array.shape
        image = QImage(array.data, w, h, array.strides[0], QImage.Format.Format_Grayscale8)
    elif array.ndim == 3 and array.shape[2] == 3:
        h, w = array.shape[:2]
        image = QImage(array.data, w, h, array.strides[0], QImage.Format.Format_RGB888)
    elif array.ndim == 3 and array.shape[2] == 4:
        h, w = array.shape[:2]
        image = QImage(array.data, w, h, array.strides[0], QImage.Format.Format_RGBA8888)
    else:
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4) pixels, got {array.shape}")
    return image.copy()  # detach from the numpy buffer, which may be freed or changed


def rgb_to_pixmap(array: np.ndarray) -> QPixmap:
    return QPixmap.fromImage(rgb_to_qimage(array))


def qimage_to_rgb(image: QImage) -> np.ndarray:
    """A QImage as an RGB uint8 ``(H, W, 3)`` array (a copy)."""
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = image.width(), image.height(), image.bytesPerLine()
    data = np.frombuffer(image.constBits(), dtype=np.uint8, count=h * bpl).reshape(h, bpl)
    return data[:, : w * 3].reshape(h, w, 3).copy()
