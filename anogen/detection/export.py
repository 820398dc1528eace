"""ONNX export: one graph from image to (anomaly map, image score).

The graph takes ``image`` as float32 ``(batch, 3, S, S)`` in [0, 1] (S is the detector's
input size, stored in the checkpoint and in the ONNX metadata; resize before calling)
and returns ``anomaly_map`` ``(batch, 1, S, S)`` and ``score`` ``(batch,)``. The batch
axis is dynamic. After writing, the export is run with onnxruntime on a random batch and
compared with torch; a difference above ``tolerance`` is an error, so a file on disk
always matches the model it came from.

The legacy TorchScript-based exporter is used (``dynamo=False``): it needs no extra
packages and handles both detectors' operators.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from anogen.atomic import atomic_write_bytes
from anogen.detection.checkpoint import LoadedDetector, load_detector
from anogen.errors import ModelError

OPSET = 17


class MapAndScore(nn.Module):
    """Wraps a detector so one forward returns both outputs."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map = self.detector(image)
        return anomaly_map, self.detector.image_score(anomaly_map)


@dataclass
class ExportResult:
    path: Path
    image_size: int
    max_abs_diff_map: float
    max_abs_diff_score: float


def export_loaded_onnx(loaded: LoadedDetector, out_path: str | os.PathLike, *, tolerance: float = 1e-4,
                       verify_batch: int = 2, seed: int = 0) -> ExportResult:
    """Export an already loaded detector; see :func:`export_onnx`."""
    import onnx

    out_path = Path(out_path)
    size = loaded.image_size
    wrapper = MapAndScore(loaded.detector).to("cpu").eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.rand(1, 3, size, size, generator=generator)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter warns about its own deprecation and about tracing
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["anomaly_map", "score"],
                          dynamic_axes={"image": {0: "batch"}, "anomaly_map": {0: "batch"}, "score": {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    metadata = {"kind": loaded.kind, "image_size": str(size), "input_range": "[0, 1] RGB, NCHW",
                "calibration": json.dumps(loaded.calibration.to_dict()), "producer": "anogen"}
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    data = model.SerializeToString()

    check = torch.rand(verify_batch, 3, size, size, generator=generator)
    diff_map, diff_score = _compare_with_onnxruntime(wrapper, data, check)
    if max(diff_map, diff_score) > tolerance:
        raise ModelError(f"ONNX export does not match torch (max difference {max(diff_map, diff_score):.2e} > "
                         f"{tolerance:.0e}); nothing was written")
    atomic_write_bytes(out_path, data)
    return ExportResult(path=out_path, image_size=size, max_abs_diff_map=diff_map, max_abs_diff_score=diff_score)


def _compare_with_onnxruntime(wrapper: nn.Module, data: bytes, image: torch.Tensor) -> tuple[float, float]:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    onnx_map, onnx_score = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        torch_map, torch_score = wrapper(image)
    return (float(np.abs(onnx_map - torch_map.numpy()).max()),
            float(np.abs(onnx_score - torch_score.numpy()).max()))


def export_onnx(folder: str | os.PathLike, out_path: Optional[str | os.PathLike] = None, *,
                which: str = "best", tolerance: float = 1e-4) -> ExportResult:
    """Export the ``which`` checkpoint of a trained detector folder to ONNX.

    ``out_path`` defaults to ``<folder>/model.onnx``. The file is written atomically and
    only after onnxruntime reproduced torch's outputs within ``tolerance``.
    """
    loaded = load_detector(folder, which=which, device="cpu")
    if out_path is None:
        out_path = Path(folder) / "model.onnx"
    return export_loaded_onnx(loaded, out_path, tolerance=tolerance)


def run_onnx(path: str | os.PathLike, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported model on float32 NCHW images; returns (maps, scores)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    anomaly_map, score = session.run(None, {"image": np.ascontiguousarray(images, dtype=np.float32)})
    return anomaly_map, score
