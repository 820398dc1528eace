"""Issue 15, "keep them from coming back": SIGKILL ``anogen train`` and ``anogen generate``
at random points and check what a kill leaves.

After any kill the output folder is either absent, complete, or reported as incomplete
by every command that reads it (``evaluate``, ``export``, ``predict``, ``train``); a
killed ``train`` resumes to a complete run, and a generated set is never half written.

Each command runs in a real child process (a kill must not take pytest with it) on a
tiny category, a tiny DRAEM and a tiny diffusion model. Kill points are drawn from a
seeded generator over the window in which the command writes its output, measured on
an uninterrupted run first.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _data_helpers import TINY_DRAEM_ARGS

from anogen.cli import main

pytestmark = pytest.mark.slow

KILLS = 3  # per command: with the uninterrupted run, about a minute in all on two busy cores
ENV = {**os.environ, "ANOGEN_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _started_writing(out: Path) -> bool:
    """The output, or a staging folder of it (``.NAME.*.partial``), exists."""
    return out.exists() or any(out.parent.glob(f".{out.name}.*"))


def _run(argv: list[str], out: Path, kill_after: float | None) -> tuple[int | None, float]:
    """Run ``anogen ARGV``; with ``kill_after``, SIGKILL it that many seconds after it
    starts writing ``out``. Returns (exit code or None when killed, seconds spent writing)."""
    process = subprocess.Popen([sys.executable, "-m", "anogen", *argv], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _started_writing(out) and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"anogen {argv[0]} did not start writing {out} in 300 s")
        time.sleep(0.01)
    writing_since = time.monotonic()
    try:
        code = process.wait(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return None, time.monotonic() - writing_since
    finally:
        if process.stderr is not None:
            errors = process.stderr.read()
            process.stderr.close()
    if kill_after is None:
        assert code == 0, errors[-3000:]
    return code, time.monotonic() - writing_since


def _kill_points(window: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return sorted(rng.uniform(0.0, window) for _ in range(KILLS))


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1] if err.strip() else ""


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    from _data_helpers import make_category

    return make_category(tmp_path_factory.mktemp("data") / "cat", size=(32, 40), train=4, per_kind=2)


# ----------------------------------------------------------------------------- train
def _train_argv(category: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(category), "--detector", "draem", "--steps", "8", "--validate-every", "2",
            "--device", "cpu", "--quiet", *TINY_DRAEM_ARGS, "--out", str(out), *extra]


def _readers(run: Path, category: Path, tmp: Path) -> dict[str, list[str]]:
    return {
        "evaluate": ["evaluate", "--data", str(category), "--detector-dir", str(run), "--device", "cpu", "--quiet",
                     "--json", str(tmp / "metrics.json")],
        "export": ["export", "--detector-dir", str(run), "--out", str(tmp / "model.onnx")],
        "predict": ["predict", "--detector-dir", str(run), str(category / "test" / "good"), "--device", "cpu",
                    "--quiet", "--out", str(tmp / "maps")],
    }


def _check_train_folder(run: Path, category: Path, tmp: Path, capsys) -> str:
    """Classify a killed run's folder and check every reader agrees; returns the state."""
    from anogen.detection.checkpoint import run_status

    if not run.exists():
        return "absent"
    status = run_status(run, "last") if (run / "last" / "detector.json").is_file() else None
    complete = status is not None and status.complete
    for name, argv in _readers(run, category, tmp).items():
        code = main(argv)
        line = _error(capsys)
        if complete:
            assert code == 0, f"{name} refused a complete run: {line}"
        else:
            assert code == 2 and "incomplete" in line, f"{name} on a killed run: exit {code}, {line!r}"
    code = main(_train_argv(category, run))  # without --resume: never silently trains over it
    line = _error(capsys)
    if complete:
        assert code == 2 and "already holds a trained detector" in line, line
        return "complete"
    if status is not None:
        assert code == 2 and "incomplete" in line, line
    return "incomplete"


def test_a_killed_train_is_absent_complete_or_incomplete_everywhere(category, tmp_path, capsys):
    whole = tmp_path / "whole"
    _, window = _run(_train_argv(category, whole), whole, None)
    states = []
    for index, delay in enumerate(_kill_points(window, seed=15)):
        run = tmp_path / f"killed{index}"
        code, _ = _run(_train_argv(category, run), run, delay)
        reads = tmp_path / f"reads{index}"
        reads.mkdir()
        state = _check_train_folder(run, category, reads, capsys)
        states.append((round(delay, 2), code, state))
        if state == "incomplete":  # what survived the kill resumes to a complete run
            assert main(_train_argv(category, run, "--resume")) == 0, _error(capsys)
            capsys.readouterr()
            assert _check_train_folder(run, category, tmp_path / f"reads{index}", capsys) == "complete"
    print("train kill points (s after writing began, exit code, state):", states)


# ----------------------------------------------------------------------------- generate
@pytest.fixture(scope="module")
def diffusion(tmp_path_factory) -> dict[str, Path]:
    from _data_helpers import make_tiny_diffusion

    return make_tiny_diffusion(tmp_path_factory.mktemp("diffusion"), train_good=3)


def _generate_argv(diffusion: dict[str, Path], out: Path) -> list[str]:
    return ["generate", "--model", str(diffusion["model"]), "--embedding", str(diffusion["embedding"]),
            "--normals", str(diffusion["normals"]), "--steps", "3", "--per-image", "2", "--batch-size", "1",
            "--device", "cpu", "--quiet", "--out", str(out)]


def test_a_killed_generate_leaves_no_set_or_a_whole_one(diffusion, tmp_path):
    from anogen.data.generated import read_generated_set

    whole = tmp_path / "whole"
    _, window = _run(_generate_argv(diffusion, whole), whole, None)
    expected = len(read_generated_set(whole))
    assert expected == 6
    states = []
    for index, delay in enumerate(_kill_points(window, seed=15)):
        out = tmp_path / f"killed{index}"
        code, _ = _run(_generate_argv(diffusion, out), out, delay)
        if out.exists():
            # Published only when complete: every sample, every file, a readable manifest.
            samples = read_generated_set(out)
            assert len(samples) == expected
            assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{s.id}.png" for s in samples)
            states.append((round(delay, 2), code, "complete"))
        else:
            states.append((round(delay, 2), code, "absent"))
        # Whatever the kill left, the same command completes without --overwrite.
        assert main(_generate_argv(diffusion, out)) == 0
        assert len(read_generated_set(out)) == expected
    print("generate kill points (s after writing began, exit code, state):", states)
