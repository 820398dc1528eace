"""Shared fixtures. Every test is offline and CPU-only."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Tiny models run fastest on one thread per process; the suite's parallelism comes from
# pytest-xdist workers. The compute policy (anogen.compute) reads this.
os.environ.setdefault("ANOGEN_THREADS", "1")
# torch's current ONNX exporter (anogen's default) takes ~10 s per tiny detector, the legacy
# one ~2 s; the ~20 exports tests make on the way to something else use the legacy one. The
# parity tests (test_infer_export, test_runtimes) set each exporter themselves.
os.environ.setdefault("ANOGEN_ONNX_EXPORTER", "torchscript")


def pytest_configure(config):
    # Tests run tiny models, which are fastest on one thread per process; the suite gets
    # its parallelism from pytest-xdist workers instead (`-n 2` in the README command).
    # The pin goes through the compute policy, so ANOGEN_THREADS is the only knob.
    from anogen.compute import apply_policy, resolve_policy

    apply_policy(resolve_policy("cpu"))


def _no_modal_dialog(*args, **kwargs):
    raise AssertionError("a test opened a modal file dialog; answer it with monkeypatch as a user would")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _file_dialogs_never_block(request, monkeypatch):
    """A modal QFileDialog would hang a headless run: fail at once instead."""
    if "qtbot" not in request.fixturenames:
        yield
        return
    from PySide6.QtWidgets import QFileDialog

    for name in ("getSaveFileName", "getOpenFileName", "getOpenFileNames", "getExistingDirectory"):
        monkeypatch.setattr(QFileDialog, name, _no_modal_dialog)
    yield


@pytest.fixture
def make_window(qtbot, tmp_path):
    """Main windows (Qt, offscreen) made by the test and shut down after it."""
    from _app_helpers import window_factory

    make, windows = window_factory(qtbot, tmp_path)
    yield make
    for window in windows:
        window.engine.shutdown()
