"""``anogen dataset check`` and ``anogen dataset demo`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import make_category

from anogen.cli import main
from anogen.data.imageio import write_mask


def test_check_a_sound_dataset_exits_0_with_a_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_category(tmp_path / "widget", train=3, test_good=2, kinds=("hole", "scratch"), per_kind=2)
    assert main(["dataset", "check", str(tmp_path / "widget"), "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["category", "split", "kind", "images"]
    assert any(line.split() == ["widget", "test", "scratch", "2", "2", "0", "0", "0"] for line in lines)
    assert "9 images in 1 category: 0 errors, 0 warnings" in out


def test_check_a_broken_dataset_exits_2_with_one_line_per_error(tmp_path: Path) -> None:
    root = make_category(tmp_path / "widget", train=2, kinds=("hole",), per_kind=2)
    (root / "train" / "good" / "000.png").write_bytes(b"not an image")
    write_mask(root / "ground_truth" / "hole" / "001_mask.png", np.ones((5, 5), bool))
    # A real process, as a user runs it: the exit code and stderr are what a script sees.
    result = subprocess.run([sys.executable, "-m", "anogen", "dataset", "check", str(root), "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert any("000.png" in line and "cannot read image" in line for line in errors)
    assert any("001_mask.png" in line and "5x5" in line and "40x32" in line for line in errors)
    assert "2 errors, 0 warnings" in result.stdout


def test_check_a_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["dataset", "check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope: folder not found" in err


def test_demo_writes_a_dataset_that_passes_the_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from anogen.data.demo import DEMO_CATEGORIES

    out = tmp_path / "demo"
    category = DEMO_CATEGORIES[0]
    assert main(["dataset", "demo", str(out), "--size", "32", "--seed", "3",
                 "--categories", category, "--quiet"]) == 0
    assert capsys.readouterr().out.split() == [str(out / category)]
    assert main(["dataset", "check", str(out / category), "--quiet"]) == 0
    table = capsys.readouterr().out
    kinds = sorted(p.name for p in (out / category / "test").iterdir() if p.name != "good")
    assert len(kinds) >= 3 and all(kind in table for kind in kinds)
    assert "0 errors, 0 warnings" in table


def test_demo_rejects_bad_options_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["dataset", "demo", str(tmp_path / "d"), "--categories", "no-such-category", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-category" in err
    assert not (tmp_path / "d" / "no-such-category").exists()
