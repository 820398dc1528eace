"""The app's jobs run under the same compute policy as the CLI, with the user's CPU threads setting."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from _app_helpers import window_factory

from anogen import compute
from app.engine import job_device
from app.settings import Settings

pytest.importorskip("pytestqt")


def torch_threads_job(config, progress, cancel):
    """What a job's own thread sees."""
    return torch.get_num_threads()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_threads_setting_reaches_jobs_and_their_policy_is_logged(qtbot, tmp_path, monkeypatch,
                                                                     restore_threads):
    stored = Settings(tmp_path / "settings.ini")
    stored.cpu_threads = 2  # the test suite pins 1 through ANOGEN_THREADS: the setting must win
    stored.sync()
    make, windows = window_factory(qtbot, tmp_path)
    window = make()
    try:
        area, engine = window.job_area, window.engine
        assert area.threads_combo.currentData() == 2
        with qtbot.waitSignal(engine.jobFinished, timeout=20000):
            job = engine.submit("threads", torch_threads_job, {"device": "cpu"})
        assert job.result == 2 and job.compute.threads == 2
        assert f"threads: compute {job.compute.describe()}" in area.log.toPlainText()
        assert "cpu, 2 threads" in job.compute.describe()

        # Choosing another count is stored and applies to the next job.
        area.threads_combo.setCurrentIndex(area.threads_combo.findData(1))
        window.settings.sync()
        assert Settings(tmp_path / "settings.ini").cpu_threads == 1
        with qtbot.waitSignal(engine.jobFinished, timeout=20000):
            job = engine.submit("threads", torch_threads_job, {"device": "cpu"})
        assert job.result == 1

        # Automatic: every core (ANOGEN_THREADS unset), the policy's own default.
        monkeypatch.delenv(compute.THREADS_ENV, raising=False)
        area.threads_combo.setCurrentIndex(area.threads_combo.findData(compute.THREADS_AUTOMATIC))
        assert [area.threads_combo.itemData(i) for i in range(area.threads_combo.count())] == \
            list(compute.thread_choices())
        with qtbot.waitSignal(engine.jobFinished, timeout=20000):
            job = engine.submit("threads", torch_threads_job, {"device": "cpu"})
        assert job.result == compute.available_cores() == job.compute.threads
    finally:
        for opened in windows:
            opened.engine.shutdown()


def test_a_jobs_device_is_read_from_its_config():
    @dataclass
    class Task:
        fields: dict
        device: str = "auto"

    @dataclass
    class Nested:
        learn: dict

    assert job_device(Task({}, "cpu")) == "cpu"
    assert job_device({"device": "cuda:1"}) == "cuda:1"
    assert job_device(Nested({"device": "mps", "steps": 3})) == "mps"
    assert job_device("models/sd15") == "auto" and job_device(None) == "auto"
