"""Where a detector runs: torch (the checkpoint), onnxruntime or OpenVINO (an exported model).

:func:`inference_model` gives what :func:`anogen.detection.infer.predict` scores with:
a :class:`~anogen.detection.checkpoint.LoadedDetector` for ``torch``, an
:class:`ExportedModel` for ``onnx`` and ``openvino``. An exported model is either one
the user exported before (``anogen export``; its metadata carries the kind, input size
and score calibration) or, given only a training run, one exported on the fly into a
temporary folder that is deleted afterwards.

All three agree within :data:`RUNTIME_TOLERANCE` on the anomaly map (probabilities) and
the raw image score, in fp32: both exports run the same graph torch runs, checked
against torch when they are written, and OpenVINO is told to compute in f32 (its CPU
plugin would pick bf16 on CPUs with AMX). The normalised score divides by the
validation score range, so its difference can be larger when that range is narrow; a
score within the tolerance of the threshold may flip its decision.

OpenVINO's Python package sends usage telemetry to Google Analytics when it is imported
(``openvino.tools.ovc``, opt-out, through the ``openvino-telemetry`` package).
anogen never goes online unless asked, so :func:`import_openvino` hides
``openvino_telemetry`` from the import, which makes OpenVINO use its own no-op stub.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anogen.detection.checkpoint import LoadedDetector, ScoreCalibration
from anogen.detection.options import RUNTIME_TOLERANCE, RUNTIMES
from anogen.errors import InputError, ModelError

__all__ = ["RUNTIME_TOLERANCE", "RUNTIMES", "ExportedModel", "compile_openvino", "import_openvino",
           "inference_model", "load_exported", "load_onnx", "load_openvino", "runtime_of"]


def import_openvino() -> Any:
    """``import openvino`` without its telemetry (see the module docstring)."""
    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # None: "import" raises ImportError
    try:
        import openvino
    except ImportError as exc:
        raise ModelError(f"the OpenVINO runtime is not installed ({exc}); pip install openvino") from None
    return openvino


def compile_openvino(model: Any, threads: int | None) -> Any:
    """An OpenVINO model compiled for the CPU in f32 (latency: one request at a time)."""
    ov = import_openvino()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return ov.Core().compile_model(model, "CPU", config)


@dataclass
class ExportedModel:
    """An exported detector loaded in onnxruntime or OpenVINO, with its calibration."""

    runtime: str
    path: Path
    kind: str
    image_size: int
    calibration: ScoreCalibration
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = field(repr=False)
    """float32 NCHW images in [0, 1] -> anomaly maps ``(N, 1, S, S)`` and scores ``(N,)``."""

    def score(self, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly maps ``(N, S, S)`` and image scores ``(N,)`` for float32 NHWC images (the
        counterpart of :func:`anogen.detection.infer.score_images`)."""
        maps, scores = [], []
        for start in range(0, len(images), batch_size):
            chunk = np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2), dtype=np.float32)
            anomaly_map, score = self.run(chunk)
            maps.append(np.asarray(anomaly_map, dtype=np.float32)[:, 0])
            scores.append(np.asarray(score, dtype=np.float32).reshape(-1))
        return np.concatenate(maps), np.concatenate(scores)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _from_metadata(runtime: str, path: Path, metadata: dict[str, str],
                   run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> ExportedModel:
    if metadata.get("producer") != "anogen" or "calibration" not in metadata:
        raise ModelError(f"{path}: not a detector exported by 'anogen export' (no anogen metadata: kind, input "
                         "size, score calibration)")
    try:
        return ExportedModel(runtime=runtime, path=path, kind=metadata["kind"],
                             image_size=int(metadata["image_size"]),
                             calibration=ScoreCalibration.from_dict(json.loads(metadata["calibration"])), run=run)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: damaged anogen metadata ({exc.__class__.__name__}: {exc})") from None


def load_onnx(path: str | os.PathLike, *, threads: int | None = None) -> ExportedModel:
    """An ``anogen export --format onnx`` file in onnxruntime (CPU)."""
    import onnxruntime

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: an ONNX model is a file, but this is a folder")
    if not path.is_file():
        raise InputError(f"{path}: exported model not found")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: a damaged file is reported below, in one line
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != (["image"], ["anomaly_map", "score"]):
        raise ModelError(f"{path}: not an anogen detector graph (inputs {names[0]}, outputs {names[1]})")

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        anomaly_map, score = session.run(None, {"image": images})
        return anomaly_map, score

    return _from_metadata("onnx", path, metadata, run)


def load_openvino(path: str | os.PathLike, *, threads: int | None = None) -> ExportedModel:
    """An ``anogen export --format openvino`` folder (or its ``model.xml``) in OpenVINO (CPU, f32)."""
    from anogen.detection.export import OPENVINO_RT_INFO, OPENVINO_XML

    path = Path(path)
    xml = path / OPENVINO_XML if path.is_dir() else path
    if not xml.is_file():
        raise InputError(f"{xml}: exported model not found" if path.is_dir() or path.suffix == ".xml" else
                         f"{path}: exported model not found (an OpenVINO export is a folder holding {OPENVINO_XML})")
    ov = import_openvino()
    try:
        model = ov.Core().read_model(xml)
        compiled = compile_openvino(model, threads)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with multi-line messages
        raise ModelError(f"{xml}: not a readable OpenVINO model ({_first_line(exc)})") from None
    metadata = {}
    for key in ("producer", "kind", "image_size", "calibration"):
        if model.has_rt_info([OPENVINO_RT_INFO, key]):
            metadata[key] = model.get_rt_info([OPENVINO_RT_INFO, key]).astype(str)
    inputs = [i.get_any_name() for i in model.inputs]
    outputs = [o.get_any_name() for o in model.outputs]
    if inputs != ["image"] or sorted(outputs) != ["anomaly_map", "score"]:
        raise ModelError(f"{xml}: not an anogen detector graph (inputs {inputs}, outputs {outputs})")
    request = compiled.create_infer_request()

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = request.infer({"image": images})
        return result["anomaly_map"].copy(), result["score"].copy()  # the request reuses its buffers

    return _from_metadata("openvino", path, metadata, run)


def runtime_of(path: str | os.PathLike) -> str:
    """The runtime an exported model is for, from its path: a ``.onnx`` file or an OpenVINO folder/``.xml``."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.is_dir() or path.suffix.lower() == ".xml":
        return "openvino"
    raise InputError(f"{path}: not an exported model (a .onnx file or an OpenVINO folder); "
                     "name the runtime with --runtime onnx|openvino")


def load_exported(path: str | os.PathLike, runtime: str | None = None, *,
                  threads: int | None = None) -> ExportedModel:
    """An exported model in ``runtime`` (default: the one its path says)."""
    runtime = runtime or runtime_of(path)
    if runtime == "onnx":
        return load_onnx(path, threads=threads)
    if runtime == "openvino":
        return load_openvino(path, threads=threads)
    raise InputError(f"runtime {runtime!r} does not run exported models; choose onnx or openvino")


@contextlib.contextmanager
def inference_model(runtime: str = "torch", *, detector_dir: str | os.PathLike | None = None,
                    model: str | os.PathLike | None = None, which: str = "best", device: str = "auto",
                    threads: int | None = None) -> Iterator[LoadedDetector | ExportedModel]:
    """The detector to score with, in ``runtime`` (one of :data:`RUNTIMES`).

    Give ``detector_dir`` (a training run; for ``onnx``/``openvino`` its ``which``
    checkpoint is exported into a temporary folder, checked against torch, and deleted
    on exit) or ``model`` (an exported model, for ``onnx``/``openvino``). ``device`` is
    torch's; exported models run on the CPU with ``threads`` threads.
    """
    from anogen.detection.checkpoint import load_detector

    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if (detector_dir is None) == (model is None):
        raise InputError("give a training run (--detector-dir) or an exported model (--model), one of the two")
    if model is not None:
        if runtime == "torch":
            raise InputError(f"{model}: an exported model runs in onnx or openvino, not torch; "
                             "for torch give the training run (--detector-dir)")
        yield load_exported(model, runtime, threads=threads)
        return
    assert detector_dir is not None
    if runtime == "torch":
        yield load_detector(detector_dir, which=which, device=device)
        return
    from anogen.detection.export import export_loaded_onnx, export_loaded_openvino

    loaded = load_detector(detector_dir, which=which, device="cpu")
    with tempfile.TemporaryDirectory(prefix="anogen-runtime-") as scratch:
        if runtime == "onnx":
            path = export_loaded_onnx(loaded, Path(scratch) / "model.onnx").path
        else:
            path = export_loaded_openvino(loaded, Path(scratch) / "openvino").path
        yield load_exported(path, runtime, threads=threads)
