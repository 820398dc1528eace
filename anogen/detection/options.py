"""Choices of a training or evaluation run, importable without torch or OpenCV.

The CLI builds its argument parser from these before any heavy module loads, and the
library validates against the same tuples.
"""

from __future__ import annotations

#: How the detector's own anomalies are made: DRAEM's Perlin textures (both detectors'
#: official choice) or CutPaste (:mod:`anogen.detection.cutpaste`, the paper's Table 4).
SYNTHESIS_METHODS = ("perlin", "cutpaste")

#: Which checkpoint is scored on which test images (see :mod:`anogen.detection.evaluate`):
#: ``holdout`` picks the best checkpoint on a held-out share of the test set and scores
#: the rest; ``paper`` scores the last checkpoint on the whole test set, as the reference
#: code did. Both leave the support images out.
PROTOCOLS = ("holdout", "paper")
PROTOCOL_CHECKPOINT = {"holdout": "best", "paper": "last"}

#: The two checkpoints a training run writes: ``best`` (best validation) and ``last``.
CHECKPOINT_CHOICES = ("best", "last")

#: Formats ``anogen export`` writes (:mod:`anogen.detection.export`).
EXPORT_FORMATS = ("onnx", "openvino")
#: What each format is called where people read it (the app's export choice, messages).
EXPORT_FORMAT_NAMES = {"onnx": "ONNX", "openvino": "OpenVINO IR"}

#: Where ``anogen predict`` runs a detector (:mod:`anogen.detection.runtimes`): torch on
#: the checkpoint, or an exported model in onnxruntime or OpenVINO.
RUNTIMES = ("torch", *EXPORT_FORMATS)

#: How far apart the runtimes may be, absolute, on anomaly maps (probabilities) and raw
#: image scores in fp32 (tested in tests/test_runtimes.py; measured differences ~1e-7).
RUNTIME_TOLERANCE = 1e-4
