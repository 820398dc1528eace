"""The job contract: progress reports, cancelling, and no partial output after a cancel."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from anogen.atomic import staged_directory
from anogen.errors import AnoGenError, JobCancelled
from anogen.jobs import Progress, ProgressFn, TqdmProgress, check_cancel, no_progress


@dataclass
class CountConfig:
    out: Path
    files: int


@dataclass
class CountResult:
    folder: Path
    written: int


def count_job(config: CountConfig, progress: ProgressFn = no_progress,
              cancel: threading.Event | None = None, cancel_at: int = -1) -> CountResult:
    """A job that follows the contract: one file per step into a staged folder."""
    with staged_directory(config.out) as staging:
        for step in range(config.files):
            if step == cancel_at and cancel is not None:
                cancel.set()  # as if the user pressed Cancel during this step
            check_cancel(cancel)
            (staging / f"{step}.txt").write_text(str(step))
            progress(Progress(step + 1, config.files, f"file {step}", metrics={"loss": 1.0 / (step + 1)}))
    return CountResult(config.out, config.files)


def test_progress_is_reported_every_step(tmp_path: Path) -> None:
    reports: list[Progress] = []
    result = count_job(CountConfig(tmp_path / "out", 4), reports.append)
    assert [(r.step, r.total) for r in reports] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert reports[-1].fraction == 1.0 and reports[1].metrics["loss"] == pytest.approx(0.5)
    assert sorted(p.name for p in result.folder.iterdir()) == ["0.txt", "1.txt", "2.txt", "3.txt"]
    assert Progress(0, 0).fraction == 0.0 and Progress(7, 5).fraction == 1.0


def test_check_cancel_raises_only_when_set() -> None:
    event = threading.Event()
    check_cancel(None)
    check_cancel(event)
    event.set()
    with pytest.raises(JobCancelled) as info:
        check_cancel(event)
    assert isinstance(info.value, AnoGenError)  # the CLI turns it into one line, not a traceback


def test_cancel_leaves_no_partial_output(tmp_path: Path) -> None:
    cancel = threading.Event()
    with pytest.raises(JobCancelled):
        count_job(CountConfig(tmp_path / "out", 5), cancel=cancel, cancel_at=3)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its staging copy


def test_a_failed_rerun_keeps_the_previous_output(tmp_path: Path) -> None:
    count_job(CountConfig(tmp_path / "out", 2))
    with pytest.raises(JobCancelled):
        count_job(CountConfig(tmp_path / "out", 5), cancel=threading.Event(), cancel_at=4)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.txt", "1.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    count_job(CountConfig(tmp_path / "out", 3))  # a successful rerun replaces it whole
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.txt", "1.txt", "2.txt"]


def test_tqdm_progress_draws_the_bar(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    with TqdmProgress("counting") as bar:
        count_job(CountConfig(tmp_path / "out", 3), bar)
    err = capsys.readouterr().err
    assert "counting: file 2" in err and "3/3" in err and "loss=0.3333" in err
    with TqdmProgress("quiet", disable=True) as bar:
        count_job(CountConfig(tmp_path / "out2", 3), bar)
    assert "quiet" not in capsys.readouterr().err


def test_atomic_writes_give_files_the_usual_permissions(tmp_path):
    # The temporary file is owner-only; the published file gets 0666 less the umask,
    # like any file the user's other programs write.
    import os
    import stat

    from anogen.atomic import atomic_write_text

    umask = os.umask(0)
    os.umask(umask)
    target = tmp_path / "out.json"
    atomic_write_text(target, "{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
