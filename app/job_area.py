"""The bottom job area: progress, ETA, the log of job messages, Cancel, the queue and the
CPU threads jobs run with (a user setting; each job's compute policy goes into the log)."""

from __future__ import annotations

import time

from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from anogen.compute import THREADS_AUTOMATIC, available_cores, thread_choices, threads_from_setting
from anogen.jobs import Progress
from app.engine import Job, JobEngine, format_eta
from app.icons import icon
from app.settings import Settings

LOG_LINES = 2000
LOG_EVERY_S = 1.0  # progress lines in the log at most this often per job


def threads_label(count: int) -> str:
    """How a threads setting reads in the chooser."""
    if count == THREADS_AUTOMATIC:
        cores = available_cores()
        return f"Automatic ({cores} core{'s' if cores != 1 else ''})"
    return f"{count} thread{'s' if count != 1 else ''}"


class JobArea(QWidget):
    def __init__(self, engine: JobEngine, settings: Settings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.settings = settings
        self.title = QLabel("No job running")
        self.title.setObjectName("jobTitle")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.eta = QLabel("")
        self.eta.setMinimumWidth(130)
        self.queue_label = QLabel("")
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.cancel_button.setObjectName("cancelJob")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop the running job (Ctrl+Break); nothing half-written is kept")
        self.cancel_button.clicked.connect(lambda: self.engine.cancel())
        self.log = QPlainTextEdit()
        self.log.setObjectName("jobLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setPlaceholderText("Job messages appear here.")
        self.threads_combo = self._threads_chooser(settings.cpu_threads if settings is not None else THREADS_AUTOMATIC)

        top = QHBoxLayout()
        top.addWidget(self.title)
        top.addWidget(self.progress, 1)
        top.addWidget(self.eta)
        top.addWidget(self.queue_label)
        top.addWidget(QLabel("CPU threads"))
        top.addWidget(self.threads_combo)
        top.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addLayout(top)
        layout.addWidget(self.log, 1)

        self._last_logged: dict[int, float] = {}
        engine.jobQueued.connect(lambda job: self.add_log(f"queued: {job.title}"))
        engine.jobStarted.connect(self._started)
        engine.jobProgress.connect(self._progress)
        engine.jobCompute.connect(lambda job, policy: self.add_log(f"{job.title}: compute {policy.describe()}"))
        engine.jobFinished.connect(lambda job, _r: self._ended(job, f"done in {job.elapsed():.1f} s"))
        engine.jobFailed.connect(lambda job, message, _d: self._ended(job, f"failed: {message}"))
        engine.jobCancelled.connect(lambda job: self._ended(job, "cancelled"))
        engine.queueChanged.connect(self._queue_changed)

    def _threads_chooser(self, stored: int) -> QComboBox:
        """The choices are the compute policy's; a stored count it does not offer (set on a
        bigger machine) stays selectable."""
        combo = QComboBox()
        combo.setObjectName("cpuThreads")
        choices = list(thread_choices())
        if stored not in choices:
            choices.append(stored)
        for count in choices:
            combo.addItem(threads_label(count), count)
        combo.setCurrentIndex(choices.index(stored))
        combo.setToolTip("torch CPU threads for the next jobs. Automatic uses every core; fewer can be faster "
                         "when other heavy programs share the machine.")
        self.engine.set_threads(threads_from_setting(stored))
        combo.currentIndexChanged.connect(self._threads_changed)
        return combo

    def _threads_changed(self, _index: int) -> None:
        count = int(self.threads_combo.currentData())
        if self.settings is not None:
            self.settings.cpu_threads = count
        self.engine.set_threads(threads_from_setting(count))
        self.add_log(f"CPU threads for the next jobs: {threads_label(count)}")

    def add_log(self, line: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {line}")

    def _started(self, job: Job) -> None:
        self.add_log(f"started: {job.title}")
        self._show(job)

    def _show(self, job: Job | None) -> None:
        if job is None:
            self.title.setText("No job running")
            self.progress.setValue(0)
            self.progress.setFormat("")
            self.eta.setText("")
            self.cancel_button.setEnabled(False)
            return
        self.title.setText(job.title)
        self.cancel_button.setEnabled(True)
        report = job.last
        if report is None:
            self.progress.setRange(0, 0)  # busy indicator until the first report
            return
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(report.fraction * 1000))
        self.progress.setFormat(f"{report.step}/{report.total}  {report.message}".strip())
        self.eta.setText(format_eta(job.eta_seconds()))

    def _progress(self, job: Job, report: Progress) -> None:
        if job is self.engine.current():
            self._show(job)
        now = time.monotonic()
        if now - self._last_logged.get(job.id, 0.0) >= LOG_EVERY_S or report.step == report.total:
            self._last_logged[job.id] = now
            metrics = "  ".join(f"{k} {v:.4g}" for k, v in report.metrics.items())
            self.add_log(f"{job.title}: {report.step}/{report.total} {report.message} {metrics}".rstrip())

    def _ended(self, job: Job, outcome: str) -> None:
        self.add_log(f"{job.title}: {outcome}")
        self._last_logged.pop(job.id, None)
        self._show(self.engine.current())
        if self.engine.current() is None:
            self.progress.setRange(0, 1000)

    def _queue_changed(self) -> None:
        queued = self.engine.queued()
        self.queue_label.setText(f"{len(queued)} queued" if queued else "")
        self.queue_label.setToolTip("\n".join(job.title for job in queued))
        if self.engine.current() is not None:
            self._show(self.engine.current())
