"""AnoGen Studio: few-shot defect generation and weakly supervised defect detection.

The library never imports Qt. Layers: ``anogen.data`` (files in), ``anogen.diffusion``
(stages 1 and 2), ``anogen.detection`` (stage 3), ``anogen.metrics``, ``anogen.jobs``.
"""

__version__ = "0.1.0"
