"""Inference with a trained detector: anomaly maps at the input size, scores, heat maps.

Images of any size are resized to the detector's square input size, scored in batches,
and each anomaly map is resized back to its image's own size. The image score is the
detector's own (DRAEM: max of the 21x21 mean-pooled map; DeSTSeg: mean of the top 100
pixels), computed on the map at the detector's resolution, exactly as in validation, so
the threshold stored in the checkpoint applies unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from anogen.detection.checkpoint import LoadedDetector
from anogen.detection.preprocess import resize_image
from anogen.errors import InputError

if TYPE_CHECKING:
    from anogen.detection.base import Detector
    from anogen.detection.runtimes import ExportedModel


@dataclass
class Prediction:
    """The detector's answer for one image."""

    anomaly_map: np.ndarray  # float32 (H, W) in [0, 1], at the input image's size
    score: float  # raw image score
    normalised_score: float  # 0..1, 0.5 at the validation threshold
    is_anomalous: bool  # score >= the F1-max threshold found on validation


def _check_image(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
        raise InputError(f"image {index}: expected an RGB image (H, W, 3), got shape {image.shape}")
    return image[:, :, :3]


def predict(loaded: LoadedDetector | ExportedModel, images: Sequence[np.ndarray], *,
            batch_size: int = 8) -> list[Prediction]:
    """Score RGB images (uint8, or float in [0, 1]) of any size with a loaded detector, or
    with an exported one in onnxruntime or OpenVINO (:mod:`anogen.detection.runtimes`)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    size = loaded.image_size
    calibration = loaded.calibration
    predictions: list[Prediction] = []
    checked = [_check_image(image, i) for i, image in enumerate(images)]
    for start in range(0, len(checked), batch_size):
        chunk = checked[start:start + batch_size]
        resized = np.stack([resize_image(image, size) for image in chunk])
        maps, scores = score_with(loaded, resized, batch_size)
        normalised = calibration.normalise(scores)
        for image, anomaly_map, score, norm in zip(chunk, maps, scores, normalised):
            height, width = image.shape[:2]
            if (height, width) != anomaly_map.shape:
                anomaly_map = cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR)
            predictions.append(Prediction(anomaly_map=np.clip(anomaly_map, 0.0, 1.0).astype(np.float32),
                                          score=float(score), normalised_score=float(norm),
                                          is_anomalous=bool(score >= calibration.threshold)))
    return predictions


def score_with(model: LoadedDetector | ExportedModel, images: np.ndarray,
               batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps ``(N, S, S)`` and image scores ``(N,)`` for float32 NHWC images at the
    model's input size, in whichever runtime it is loaded: a checkpoint in torch, or an
    exported model in onnxruntime or OpenVINO."""
    if isinstance(model, LoadedDetector):
        return score_images(model.detector, images, model.device, batch_size)
    return model.score(images, batch_size)


def score_images(detector: Detector, images: np.ndarray, device: torch.device,
                 batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps ``(N, S, S)`` and image scores ``(N,)`` for float32 NHWC images."""
    was_training = detector.training
    detector.eval()
    maps, scores = [], []
    try:
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2)))
            anomaly_map, score = detector.predict(chunk.to(device))
            maps.append(anomaly_map[:, 0].float().cpu().numpy())
            scores.append(score.float().cpu().numpy())
    finally:
        detector.train(was_training)
    return np.concatenate(maps), np.concatenate(scores)


def heatmap_overlay(image: np.ndarray, anomaly_map: np.ndarray, *, alpha: float = 0.5,
                    vmax: float | None = 1.0, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend a colour-mapped anomaly map over an RGB uint8 image; returns RGB uint8.

    ``vmax`` fixes the top of the colour scale (1.0: probabilities as they are, so two
    images' heat maps compare); ``None`` stretches each map to its own maximum.
    """
    image = _check_image(image, 0)
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if anomaly_map.shape != image.shape[:2]:
        anomaly_map = cv2.resize(anomaly_map, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    top = float(anomaly_map.max()) if vmax is None else float(vmax)
    scaled = np.clip(anomaly_map / max(top, 1e-8), 0.0, 1.0)
    coloured = cv2.applyColorMap((scaled * 255).astype(np.uint8), colormap)  # BGR
    coloured = cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, coloured, alpha, 0.0)
