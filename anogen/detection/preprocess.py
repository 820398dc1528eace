"""Images and masks at a detector's input size, the same way for training, validation,
evaluation and inference.

A detector sees square float32 RGB images in [0, 1] (no ImageNet normalisation).
Shrinking uses area averaging, enlarging bilinear; a mask is area-resized and then
thresholded at 0.5, so a resized defect keeps about its area.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anogen.errors import InputError


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 or float image -> float32 ``(size, size, 3)`` in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    else:
        image = np.clip(image.astype(np.float32), 0.0, 1.0)
    if image.shape[:2] != (size, size):
        shrinking = image.shape[0] > size or image.shape[1] > size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image, dtype=np.float32)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """bool/float mask -> float32 ``(size, size)`` in {0, 1} (area-resized, then >= 0.5)."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return (mask >= 0.5).astype(np.float32)


def read_resized(paths: Sequence[str | os.PathLike], size: int) -> list[np.ndarray]:
    """Read image files and resize each with :func:`resize_image`."""
    from anogen.data.imageio import read_image

    # Decoding and resizing release the GIL; a few threads hide most of the I/O time.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: resize_image(read_image(Path(p)), size), paths))


def ground_truth_resized(record: Any, size: int, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The pixel ground truth of a dataset record (:class:`~anogen.data.datasets.ImageRecord`)
    as bool ``(size, size)``; all False for a good image.

    The mask must have its image's size (``image_shape``, else read from the image): a
    mask of another size is refused, never resized.
    """
    from anogen.data.datasets import read_ground_truth

    mask = read_ground_truth(record, image_shape)
    if mask is None:
        return np.zeros((size, size), dtype=bool)
    return resize_mask(mask, size) > 0.5
