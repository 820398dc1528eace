"""Export a detector for deployment: ONNX, and OpenVINO IR converted from the ONNX graph.

The graph takes ``image`` as float32 ``(batch, 3, S, S)`` in [0, 1] (S is the detector's
input size, stored in the checkpoint and in the export's metadata; resize before calling)
and returns ``anomaly_map`` ``(batch, 1, S, S)`` and ``score`` ``(batch,)``. The batch
axis is dynamic. Both formats carry the same metadata (:func:`export_metadata`: the
detector kind, the input size and the score calibration of the checkpoint), so an
exported model alone gives the same normalised scores and decisions as the checkpoint.

Before anything is written, the export is run on a random batch (onnxruntime for ONNX,
the OpenVINO CPU plugin at f32 for OpenVINO) and compared with torch; a difference above
``tolerance`` is an error, so a model on disk always matches the checkpoint it came from.

* ONNX: one file, written atomically. The graph comes from torch's current exporter
  (``torch.onnx.export(dynamo=True)``: ``torch.export`` + onnxscript, opset 18, the
  lowest its operator library implements). Where that exporter is missing (no onnxscript)
  or fails on a model, the legacy TorchScript exporter (``dynamo=False``, opset 17,
  deprecated by torch) is used instead and a warning says why; :func:`onnx_exporter`
  is the one place that decides. Either graph passes the same check against torch.
  The current exporter is slower (tiny test detectors, 2 threads: ~12 s against ~2 s,
  most of it in ``torch.export``'s capture and decompositions; the graphs run equally
  fast; ``docs/benchmarks.md``), so the test suite sets
  ``ANOGEN_ONNX_EXPORTER=torchscript`` for the exports it makes only on the way to
  something else, and the parity tests run both exporters.
* OpenVINO: a folder (``model.xml`` + ``model.bin`` + anogen's output marker) built under
  a temporary name and moved into place when complete. ``openvino.convert_model`` reads
  the ONNX graph; ``openvino.save_model`` keeps fp32 weights (``compress_to_fp16=False``:
  its fp16 default would change the scores). The metadata is in the IR's ``rt_info``
  under ``anogen``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from anogen.atomic import atomic_write_bytes, staged_directory
from anogen.detection.checkpoint import LoadedDetector, load_detector
from anogen.errors import ModelError

if TYPE_CHECKING:
    from anogen.detection.base import Detector

log = logging.getLogger(__name__)

#: torch's current ONNX exporter (``torch.export`` + onnxscript) and its deprecated TorchScript one.
DYNAMO = "dynamo"
TORCHSCRIPT = "torchscript"
EXPORTERS = (DYNAMO, TORCHSCRIPT)
#: Names the exporter to try first (default: :data:`DYNAMO`). The test suite sets it to
#: :data:`TORCHSCRIPT` for the exports it makes on the way to something else: that exporter
#: is 5-20x faster on tiny models (``docs/benchmarks.md``). Not a user setting; whichever is
#: named, the other exporter remains the fallback.
EXPORTER_ENV = "ANOGEN_ONNX_EXPORTER"
#: The opset each exporter writes. onnxscript's torch operator library implements opset 18
#: (torch converts lower requests down afterwards, which can fail); the legacy exporter's
#: graphs keep the opset 17 they always had.
OPSET = {DYNAMO: 18, TORCHSCRIPT: 17}
#: Largest absolute difference from torch an export may show on its check batch (anomaly
#: map probabilities and raw image scores, fp32). Measured differences are ~1e-7.
EXPORT_TOLERANCE = 1e-4
#: The OpenVINO IR inside an exported folder, and where its metadata sits in ``rt_info``.
OPENVINO_XML = "model.xml"
OPENVINO_RT_INFO = "anogen"


class MapAndScore(nn.Module):
    """Wraps a detector so one forward returns both outputs."""

    def __init__(self, detector: Detector) -> None:
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
    #: The ONNX exporter that made the graph (:data:`DYNAMO` or :data:`TORCHSCRIPT`).
    exporter: str = DYNAMO


def export_metadata(loaded: LoadedDetector) -> dict[str, str]:
    """What every export records besides the graph (strings: ONNX metadata and OpenVINO rt_info)."""
    return {"kind": loaded.kind, "image_size": str(loaded.image_size), "input_range": "[0, 1] RGB, NCHW",
            "calibration": json.dumps(loaded.calibration.to_dict()), "producer": "anogen"}


def onnx_exporter() -> str:
    """The exporter to try first: :data:`DYNAMO` unless ``ANOGEN_ONNX_EXPORTER`` names another."""
    name = os.environ.get(EXPORTER_ENV, "").strip().lower() or DYNAMO
    if name not in EXPORTERS:
        raise ModelError(f"{EXPORTER_ENV}={name!r}: choose one of {', '.join(EXPORTERS)}")
    return name


def _export_dynamo(wrapper: nn.Module, example: torch.Tensor) -> bytes:
    if importlib.util.find_spec("onnxscript") is None:
        raise ModuleNotFoundError("the onnxscript package is not installed")
    # Its operator registry logs one warning per torchvision operator when torchvision is
    # absent (anogen uses none of them): noise on every export, hidden here.
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        # verify/report off: the export is checked against torch below, with onnxruntime.
        program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=OPSET[DYNAMO],
                                    input_names=["image"], output_names=["anomaly_map", "score"],
                                    dynamic_shapes={"image": {0: "batch"}},
                                    optimize=True, verify=False, report=False, verbose=False)
    finally:
        registry_log.setLevel(level)
    if program is None:  # only with a file to write to, which is not given
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with torch.no_grad():
        # The TorchScript exporter (dynamo=False) writes to a file object too; torch annotates only paths.
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False,  # type: ignore[arg-type]
                          opset_version=OPSET[TORCHSCRIPT],
                          input_names=["image"], output_names=["anomaly_map", "score"],
                          dynamic_axes={"image": {0: "batch"}, "anomaly_map": {0: "batch"}, "score": {0: "batch"}})
    return buffer.getvalue()


_EXPORT = {DYNAMO: _export_dynamo, TORCHSCRIPT: _export_torchscript}


def _export_graph(wrapper: nn.Module, example: torch.Tensor) -> tuple[str, bytes]:
    """The ONNX bytes of ``wrapper`` and the exporter that made them: :func:`onnx_exporter`'s
    choice, or the other one where that one is missing or fails (with a warning)."""
    first = onnx_exporter()
    order = [first, *(name for name in EXPORTERS if name != first)]
    failures: list[str] = []
    for name in order:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecation, tracing and "BytesIO" notices of the exporters
                data = _EXPORT[name](wrapper, example)
        except Exception as exc:  # noqa: BLE001 - either exporter may fail on any op; the other one is tried
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            failures.append(f"{name}: {why}")
            if name != order[-1]:
                log.warning("the %s ONNX exporter failed (%s); using the %s exporter", name, why,
                            order[len(failures)])
            continue
        return name, data
    raise ModelError(f"no ONNX exporter could export the detector ({'; '.join(failures)})")


def _onnx_graph(loaded: LoadedDetector, generator: torch.Generator) -> tuple[nn.Module, str, bytes]:
    """The detector (on the CPU, eval) wrapped to return both outputs, the exporter used, and
    its ONNX bytes with metadata."""
    import onnx

    size = loaded.image_size
    wrapper = MapAndScore(loaded.detector).to("cpu").eval()
    # Two images, so that torch.export keeps the batch axis symbolic (a size of 1 is specialised).
    example = torch.rand(2, 3, size, size, generator=generator)
    exporter, data = _export_graph(wrapper, example)
    model = onnx.load_from_string(data)
    for key, value in export_metadata(loaded).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return wrapper, exporter, model.SerializeToString()


def _check_tolerance(what: str, diff_map: float, diff_score: float, tolerance: float) -> None:
    if max(diff_map, diff_score) > tolerance:
        raise ModelError(f"{what} export does not match torch (max difference {max(diff_map, diff_score):.2e} > "
                         f"{tolerance:.0e}); nothing was written")


def export_loaded_onnx(loaded: LoadedDetector, out_path: str | os.PathLike, *, tolerance: float = EXPORT_TOLERANCE,
                       verify_batch: int = 2, seed: int = 0) -> ExportResult:
    """Export an already loaded detector; see :func:`export_onnx`."""
    out_path = Path(out_path)
    size = loaded.image_size
    generator = torch.Generator().manual_seed(seed)
    wrapper, exporter, data = _onnx_graph(loaded, generator)
    check = torch.rand(verify_batch, 3, size, size, generator=generator)
    diff_map, diff_score = _compare_with_onnxruntime(wrapper, data, check)
    _check_tolerance("ONNX", diff_map, diff_score, tolerance)
    atomic_write_bytes(out_path, data)
    return ExportResult(path=out_path, image_size=size, max_abs_diff_map=diff_map, max_abs_diff_score=diff_score,
                        exporter=exporter)


def export_loaded_openvino(loaded: LoadedDetector, out_dir: str | os.PathLike, *,
                           tolerance: float = EXPORT_TOLERANCE, verify_batch: int = 2, seed: int = 0) -> ExportResult:
    """Export an already loaded detector as an OpenVINO IR folder; see :func:`export_openvino`."""
    from anogen.detection.runtimes import compile_openvino, import_openvino
    from anogen.outputs import mark_output_dir

    ov = import_openvino()
    out_dir = Path(out_dir)
    size = loaded.image_size
    generator = torch.Generator().manual_seed(seed)
    wrapper, exporter, data = _onnx_graph(loaded, generator)
    check = torch.rand(verify_batch, 3, size, size, generator=generator)
    with tempfile.TemporaryDirectory(prefix="anogen-export-") as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        onnx_path.write_bytes(data)
        try:
            model = ov.convert_model(onnx_path)
        except Exception as exc:  # noqa: BLE001 - the converter's own errors carry no stable type
            raise ModelError(f"OpenVINO could not convert the ONNX graph ({str(exc).strip().splitlines()[0]})") \
                from None
    for key, value in export_metadata(loaded).items():
        model.set_rt_info(value, [OPENVINO_RT_INFO, key])
    with staged_directory(out_dir) as staging:
        ov.save_model(model, staging / OPENVINO_XML, compress_to_fp16=False)
        # Checked on the files just written, as predict will read them.
        compiled = compile_openvino(ov.Core().read_model(staging / OPENVINO_XML), threads=torch.get_num_threads())
        outputs = compiled(check.numpy())
        with torch.no_grad():
            torch_map, torch_score = wrapper(check)
        diff_map = float(np.abs(outputs["anomaly_map"] - torch_map.numpy()).max())
        diff_score = float(np.abs(outputs["score"] - torch_score.numpy()).max())
        _check_tolerance("OpenVINO", diff_map, diff_score, tolerance)
        mark_output_dir(staging, "export", format="openvino")
        staging.chmod(0o755)  # mkdtemp makes it private; a model folder is ordinary data
    return ExportResult(path=out_dir, image_size=size, max_abs_diff_map=diff_map, max_abs_diff_score=diff_score,
                        exporter=exporter)


def _compare_with_onnxruntime(wrapper: nn.Module, data: bytes, image: torch.Tensor) -> tuple[float, float]:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    onnx_map, onnx_score = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        torch_map, torch_score = wrapper(image)
    return (float(np.abs(onnx_map - torch_map.numpy()).max()),
            float(np.abs(onnx_score - torch_score.numpy()).max()))


def export_onnx(folder: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                which: str = "best", tolerance: float = EXPORT_TOLERANCE) -> ExportResult:
    """Export the ``which`` checkpoint of a trained detector folder to ONNX.

    ``out_path`` defaults to ``<folder>/model.onnx``. The file is written atomically and
    only after onnxruntime reproduced torch's outputs within ``tolerance``.
    """
    loaded = load_detector(folder, which=which, device="cpu")
    if out_path is None:
        out_path = Path(folder) / "model.onnx"
    return export_loaded_onnx(loaded, out_path, tolerance=tolerance)


def export_openvino(folder: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                    which: str = "best", tolerance: float = EXPORT_TOLERANCE) -> ExportResult:
    """Export the ``which`` checkpoint of a trained detector folder to an OpenVINO IR folder.

    ``out_dir`` defaults to ``<folder>/openvino``. The folder appears complete or not at
    all, and only after OpenVINO reproduced torch's outputs within ``tolerance``.
    """
    loaded = load_detector(folder, which=which, device="cpu")
    if out_dir is None:
        out_dir = Path(folder) / "openvino"
    return export_loaded_openvino(loaded, out_dir, tolerance=tolerance)


def run_onnx(path: str | os.PathLike, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported model on float32 NCHW images; returns (maps, scores)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    anomaly_map, score = session.run(None, {"image": np.ascontiguousarray(images, dtype=np.float32)})
    return anomaly_map, score
