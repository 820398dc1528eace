"""Runs library jobs on a QThread and turns their progress into Qt signals.

A job is any ``anogen`` function ``fn(config, progress, cancel) -> result`` (see
:mod:`anogen.jobs`). The engine runs one heavy job at a time and queues the others.
The worker thread never touches widgets: progress reports go into a thread-safe queue
that a UI-thread timer drains every ``DRAIN_MS``, so a job that reports thousands of
times a second cannot flood the event loop, and only the newest preview image of each
batch is passed on.

Every job runs under the compute policy (:mod:`anogen.compute`) the CLI uses: the worker
applies it (torch CPU threads from the app's setting, else every core) before the job
function starts, and the engine announces it once per job (``jobCompute``) and logs it.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from anogen.errors import AnoGenError, JobCancelled
from anogen.jobs import Progress

log = logging.getLogger(__name__)

JobFn = Callable[[Any, Callable[[Progress], None], threading.Event], Any]
DRAIN_MS = 50

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
PACE_WINDOW = 30  # the ETA follows the pace of about the last 30 steps


class Pace:
    """Steps per second in the steady state of a job, for its ETA.

    Loading a model and the first step (lazy initialisation, caches, allocator warm-up)
    can take as long as dozens of later steps, so the overall average (elapsed time over
    the fraction done) put the first ETAs 3-4x too high. The pace is measured from the end
    of the first step on, over the last ``PACE_WINDOW`` reports, and starts again when a
    job moves on to a phase with another total or counts from the start again.
    """

    def __init__(self) -> None:
        self._points: collections.deque[tuple[float, int]] = collections.deque(maxlen=PACE_WINDOW + 1)
        self._total: int | None = None

    def observe(self, when: float, step: int, total: int) -> None:
        if total != self._total or (self._points and step < self._points[-1][1]):
            self._points.clear()
            self._total = total
        if step <= 0 or (self._points and step == self._points[-1][1]):
            return  # nothing finished yet (loading), or a message without progress
        self._points.append((when, step))

    def eta(self, now: float) -> float | None:
        """Seconds left; None until two steps after the first one have been timed."""
        if len(self._points) < 2 or not self._total:
            return None
        (t0, s0), (t1, s1) = self._points[0], self._points[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        seconds_per_step = (t1 - t0) / (s1 - s0)
        return max(0.0, (self._total - s1) * seconds_per_step - max(0.0, now - t1))


@dataclass(eq=False)
class Job:
    """One submitted job and what is known about it so far."""

    id: int
    title: str
    fn: JobFn
    config: Any
    heavy: bool = True
    on_result: Callable[[Any], object] | None = None  # what it returns is ignored
    on_failure: Callable[[str], object] | None = None  # called with the final state (failed / cancelled)
    state: str = QUEUED
    cancel_event: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    error_details: str = ""
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    last: Progress | None = None
    metrics_history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    threads: int | None = None  # torch CPU threads asked for as the job started; None: the policy decides
    compute: Any = None  # the anogen.compute.ComputePolicy the job runs under, set on its thread as it starts
    _compute_announced: bool = field(default=False, repr=False)
    _reports: collections.deque = field(default_factory=collections.deque, repr=False)  # (time, Progress)
    pace: Pace = field(default_factory=Pace, repr=False)

    @property
    def fraction(self) -> float:
        return 0.0 if self.last is None else self.last.fraction

    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left at the steady pace (see :class:`Pace`); None until there is one."""
        if self.started_at is None or self.finished_at is not None or self.fraction >= 1.0:
            return None
        return self.pace.eta(time.monotonic() if now is None else now)

    def is_active(self) -> bool:
        return self.state in (QUEUED, RUNNING)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s left"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s left"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min left"


def job_device(config: Any) -> str:
    """The device a job's config asks for: its ``device`` field or key, or one in a dict or
    dataclass it holds (a learn task's fields); ``auto`` when it names none."""

    def named(value: Any) -> str | None:
        found = value.get("device") if isinstance(value, dict) else getattr(value, "device", None)
        return found if isinstance(found, str) and found else None

    found = named(config) if isinstance(config, dict) or dataclasses.is_dataclass(config) else None
    if found is None and dataclasses.is_dataclass(config) and not isinstance(config, type):
        for item in dataclasses.fields(config):
            inner = getattr(config, item.name)
            if isinstance(inner, dict) or (dataclasses.is_dataclass(inner) and not isinstance(inner, type)):
                found = named(inner)
                if found is not None:
                    break
    return found or "auto"


def apply_job_policy(config: Any, threads: int | None) -> Any:
    """Resolve and apply the compute policy for a job (on the thread that runs it)."""
    from anogen.compute import apply_policy, resolve_policy
    from anogen.device import resolve_device

    return apply_policy(resolve_policy(resolve_device(job_device(config)), threads))


class _Worker(QThread):
    """Calls the job function; everything it learns goes into the job record."""

    def __init__(self, job: Job, parent: QObject) -> None:
        super().__init__(parent)
        self.job = job

    def run(self) -> None:
        job = self.job

        def progress(report: Progress) -> None:
            job._reports.append((time.monotonic(), report))  # deque.append is thread-safe

        try:
            job.compute = apply_job_policy(job.config, job.threads)
            job.result = job.fn(job.config, progress, job.cancel_event)
            job.state = DONE
        except JobCancelled as exc:
            job.error = exc
            job.state = CANCELLED
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, none kills the app
            if job.cancel_event.is_set() and isinstance(exc, (KeyboardInterrupt,)):
                job.state = CANCELLED
            else:
                job.state = FAILED
            job.error = exc
            job.error_details = "".join(traceback.format_exception(exc))


class JobEngine(QObject):
    """Queue and run jobs; one heavy job at a time."""

    jobQueued = Signal(object)        # Job
    jobStarted = Signal(object)       # Job
    jobProgress = Signal(object, object)  # Job, Progress
    jobCompute = Signal(object, object)   # Job, anogen.compute.ComputePolicy: once, as the job starts
    jobFinished = Signal(object, object)  # Job, result
    jobFailed = Signal(object, str, str)  # Job, message, details
    jobCancelled = Signal(object)     # Job
    queueChanged = Signal()

    def __init__(self, parent: QObject | None = None, *, threads: int | None = None) -> None:
        super().__init__(parent)
        self._threads = threads
        self._ids = itertools.count(1)
        self._queue: list[Job] = []
        self._running: dict[int, tuple[Job, _Worker]] = {}
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_MS)
        self._timer.timeout.connect(self._drain)
        self._log_handler: logging.Handler | None = None

    # ------------------------------------------------------------------ public
    def submit(self, title: str, fn: JobFn, config: Any, *, heavy: bool = True,
               on_result: Callable[[Any], object] | None = None,
               on_failure: Callable[[str], object] | None = None) -> Job:
        """Queue ``fn(config, progress, cancel)``; it starts as soon as nothing heavy runs."""
        job = Job(next(self._ids), title, fn, config, heavy, on_result, on_failure)
        self._queue.append(job)
        self.jobQueued.emit(job)
        self.queueChanged.emit()
        self._start_next()
        return job

    def set_threads(self, threads: int | None) -> None:
        """torch CPU threads for the jobs that start from now on; None lets the compute policy
        decide (every core, or ``ANOGEN_THREADS``)."""
        self._threads = threads

    def threads(self) -> int | None:
        return self._threads

    def running(self) -> list[Job]:
        return [job for job, _ in self._running.values()]

    def current(self) -> Job | None:
        """The running heavy job (the one the job area shows), else any running job."""
        jobs = self.running()
        heavy = [j for j in jobs if j.heavy]
        return (heavy or jobs)[0] if jobs else None

    def queued(self) -> list[Job]:
        return list(self._queue)

    def is_busy(self) -> bool:
        return bool(self._running or self._queue)

    def cancel(self, job: Job | None = None) -> None:
        """Cancel ``job`` (default: the current one). A queued job is dropped at once; a
        running one stops at its next cancel check (at least once per step)."""
        job = job or self.current()
        if job is None:
            return
        job.cancel_event.set()
        if job in self._queue:
            self._queue.remove(job)
            job.state = CANCELLED
            self.jobCancelled.emit(job)
            self.queueChanged.emit()
            if job.on_failure is not None:
                job.on_failure(CANCELLED)

    def cancel_all(self) -> None:
        for job in list(self._queue):
            self.cancel(job)
        for job in self.running():
            job.cancel_event.set()

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Block until every job has ended (tests, shutdown); returns False on timeout."""
        from PySide6.QtCore import QCoreApplication

        deadline = time.monotonic() + timeout_s
        while self.is_busy():
            if time.monotonic() > deadline:
                return False
            QCoreApplication.processEvents()
            for _, worker in list(self._running.values()):
                worker.wait(20)
            self._drain()
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self.cancel_all()
        self.wait(timeout_s)

    def set_log_file(self, path: Path | None) -> None:
        """Append library and app log records (job errors included) to ``path``."""
        targets = [logging.getLogger("anogen"), logging.getLogger("app")]
        if self._log_handler is not None:
            for logger in targets:
                logger.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        if path is None:
            return
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for logger in targets:
            logger.addHandler(handler)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
        self._log_handler = handler

    # ------------------------------------------------------------------ internals
    def _start_next(self) -> None:
        heavy_running = any(job.heavy for job, _ in self._running.values())
        for job in list(self._queue):
            if job.heavy and heavy_running:
                continue
            self._queue.remove(job)
            job.state = RUNNING
            job.started_at = time.monotonic()
            job.threads = self._threads
            worker = _Worker(job, self)
            worker.finished.connect(lambda job_id=job.id: self._on_worker_finished(job_id))
            self._running[job.id] = (job, worker)
            heavy_running = heavy_running or job.heavy
            log.info("job %d started: %s", job.id, job.title)
            self.jobStarted.emit(job)
            worker.start()
        if self._running and not self._timer.isActive():
            self._timer.start()
        self.queueChanged.emit()

    def _drain(self) -> None:
        for job, _ in list(self._running.values()):
            self._drain_job(job)

    def _drain_job(self, job: Job) -> None:
        if job.compute is not None and not job._compute_announced:
            job._compute_announced = True
            log.info("job %d compute: %s", job.id, job.compute.describe())
            self.jobCompute.emit(job, job.compute)
        reports = []
        while job._reports:
            when, report = job._reports.popleft()
            job.pace.observe(when, report.step, report.total)  # timed when sent, not when drained
            reports.append(report)
        if not reports:
            return
        newest_preview = max((i for i, r in enumerate(reports) if r.preview is not None), default=-1)
        for i, report in enumerate(reports):
            if report.metrics:
                job.metrics_history.append((report.step, dict(report.metrics)))
            if report.preview is not None and i != newest_preview:
                report = Progress(report.step, report.total, report.message, report.metrics, None)
            job.last = report
            self.jobProgress.emit(job, report)

    def _on_worker_finished(self, job_id: int) -> None:
        job, worker = self._running.pop(job_id)
        worker.deleteLater()
        job.finished_at = time.monotonic()
        self._drain_job(job)
        if job.state == DONE:
            log.info("job %d done in %.1f s: %s", job.id, job.elapsed(), job.title)
            if job.on_result is not None:
                try:
                    job.on_result(job.result)
                except Exception as exc:  # noqa: BLE001 - storing a result failed: report it like a job error
                    job.state = FAILED
                    job.error = exc
                    job.error_details = "".join(traceback.format_exception(exc))
            if job.state == DONE:
                self.jobFinished.emit(job, job.result)
        if job.state == CANCELLED:
            log.info("job %d cancelled: %s", job.id, job.title)
            self.jobCancelled.emit(job)
            if job.on_failure is not None:
                job.on_failure(CANCELLED)
        elif job.state == FAILED:
            message = error_message(job.error)
            log.error("job %d failed: %s: %s\n%s", job.id, job.title, message, job.error_details)
            self.jobFailed.emit(job, message, job.error_details)
            if job.on_failure is not None:
                job.on_failure(FAILED)
        if not self._running:
            self._timer.stop()
        self._start_next()


def error_message(error: BaseException | None) -> str:
    """The one line a user reads: the message of an AnoGenError, else the type and text."""
    if error is None:
        return "unknown error"
    if isinstance(error, AnoGenError):
        return str(error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"Unexpected error ({error.__class__.__name__}){': ' + text if text else ''}"
