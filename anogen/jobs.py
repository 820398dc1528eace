"""The job contract every long task follows.

A job is a plain function ``run(config, progress, cancel) -> result``:

* ``config`` is a dataclass describing the work;
* ``progress`` is called with a :class:`Progress` record at least once per step;
* ``cancel`` is a :class:`threading.Event`; the job calls :func:`check_cancel` at least
  once per step and, when it is set, raises :class:`~anogen.errors.JobCancelled` after
  removing any partial output (see :func:`anogen.atomic.staged_directory`);
* the return value is a result dataclass.

The CLI runs a job in the foreground with a tqdm bar (:class:`TqdmProgress`); the GUI
runs it on a QThread and turns each :class:`Progress` into a Qt signal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anogen.errors import JobCancelled


@dataclass
class Progress:
    """One progress report from a job."""

    step: int
    total: int
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    preview: np.ndarray | None = None  # RGB uint8 HxWx3, for live previews

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.step / self.total)


ProgressFn = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that ignores every report."""


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`JobCancelled` if ``cancel`` is set. Call at least once per step."""
    if cancel is not None and cancel.is_set():
        raise JobCancelled("cancelled by the user")


class TqdmProgress:
    """A progress callback that drives a tqdm bar; use as a context manager."""

    def __init__(self, description: str, *, disable: bool = False) -> None:
        self.description = description
        self.disable = disable
        self._bar: Any = None

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def __call__(self, report: Progress) -> None:
        from tqdm import tqdm

        if self._bar is None or self._bar.total != report.total:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=report.total, desc=self.description, unit="step",
                             disable=self.disable, dynamic_ncols=True)
        self._bar.n = report.step
        postfix = {k: f"{v:.4g}" for k, v in report.metrics.items()}
        if report.message:
            self._bar.set_description(f"{self.description}: {report.message}", refresh=False)
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()
