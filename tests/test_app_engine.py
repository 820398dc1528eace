"""The job engine: queueing, progress signals, cancel, errors, UI responsiveness."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QElapsedTimer, QTimer

from anogen.errors import ModelError
from anogen.jobs import Progress, check_cancel
from app.engine import CANCELLED, DONE, FAILED, JobEngine


def counting_job(config, progress, cancel: threading.Event):
    """Steps of ``config['step_s']`` seconds; checks cancel every step like library jobs."""
    for step in range(config["steps"]):
        check_cancel(cancel)
        time.sleep(config["step_s"])
        progress(Progress(step + 1, config["steps"], "step", {"loss": 1.0 / (step + 1)}))
    return config["steps"]


def busy_python_job(config, progress, cancel):
    """Pure-Python and numpy work that holds the GIL often, like a training loop."""
    end = time.monotonic() + config["seconds"]
    step = 0
    while time.monotonic() < end:
        check_cancel(cancel)
        total = 0
        for i in range(20000):
            total += i * i
        np.sort(np.random.default_rng(step).random(20000))
        step += 1
        progress(Progress(step, 10**6, "busy", {"loss": float(total % 7)},
                          preview=np.zeros((64, 64, 3), np.uint8)))
    return step


def failing_job(config, progress, cancel):
    raise ModelError("models/missing: no such model file or folder")


@pytest.fixture
def engine(qtbot):
    engine = JobEngine()
    yield engine
    engine.shutdown()


def test_progress_and_result_arrive_as_signals(engine, qtbot):
    seen = []
    engine.jobProgress.connect(lambda job, report: seen.append(report.step))
    with qtbot.waitSignal(engine.jobFinished, timeout=5000) as finished:
        job = engine.submit("count", counting_job, {"steps": 5, "step_s": 0.01})
    assert finished.args[1] == 5 and job.state == DONE
    assert seen == [1, 2, 3, 4, 5]
    assert [m["loss"] for _, m in job.metrics_history] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])


def test_one_heavy_job_at_a_time_and_queued_job_can_be_dropped(engine, qtbot):
    first = engine.submit("first", counting_job, {"steps": 50, "step_s": 0.02})
    second = engine.submit("second", counting_job, {"steps": 2, "step_s": 0.01})
    third = engine.submit("third", counting_job, {"steps": 2, "step_s": 0.01})
    assert engine.running() == [first] and engine.queued() == [second, third]
    engine.cancel(third)
    assert third.state == CANCELLED and engine.queued() == [second]
    with qtbot.waitSignal(engine.jobFinished, timeout=10000, check_params_cb=lambda job, _: job is second):
        pass
    assert first.state == DONE and second.started_at >= first.finished_at


@pytest.mark.timing
def test_cancel_takes_effect_within_two_seconds(engine, qtbot):
    job = engine.submit("long", counting_job, {"steps": 1000, "step_s": 0.05})
    qtbot.waitUntil(lambda: job.last is not None, timeout=3000)
    start = time.monotonic()
    with qtbot.waitSignal(engine.jobCancelled, timeout=2000):
        engine.cancel()
    assert time.monotonic() - start < 2.0
    assert job.state == CANCELLED and not engine.is_busy()


def test_error_is_reported_with_plain_message_and_details_and_logged(engine, qtbot, tmp_path):
    log_file = tmp_path / "anogen.log"
    engine.set_log_file(log_file)
    with qtbot.waitSignal(engine.jobFailed, timeout=5000) as failed:
        job = engine.submit("load", failing_job, None)
    job_, message, details = failed.args
    assert job_ is job and job.state == FAILED
    assert message == "models/missing: no such model file or folder"
    assert "Traceback" in details and "ModelError" in details
    engine.set_log_file(None)
    assert "models/missing" in log_file.read_text()


def test_ui_thread_never_blocks_over_100ms_while_a_job_runs(engine, qtbot):
    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.elapsed()]

    def tick() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    reports = []
    engine.jobProgress.connect(lambda job, report: reports.append(report))
    with qtbot.waitSignal(engine.jobFinished, timeout=10000):
        timer.start()
        last[0] = clock.elapsed()
        engine.submit("busy", busy_python_job, {"seconds": 1.5})
    timer.stop()
    assert len(gaps) > 50 and len(reports) > 10
    assert max(gaps) < 100, f"UI thread blocked for {max(gaps)} ms"
