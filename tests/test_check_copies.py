"""scripts/check_copies.py: a '# Copied from' block must equal its source; --fix rewrites it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_copies.py"

SOURCE = '''\
"""The original."""


def scale(values: list[float], factor: float) -> list[float]:
    """Multiply each value."""
    return [v * factor for v in values]  # keep the order


class Model:
    @staticmethod
    def forward(x: float) -> float:
        return 2 * x
'''


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120)


def _tree(tmp_path: Path, copy: str) -> Path:
    (tmp_path / "anogen").mkdir()
    (tmp_path / "anogen" / "__init__.py").write_text("")
    (tmp_path / "anogen" / "original.py").write_text(SOURCE)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "tool.py").write_text(textwrap.dedent(copy))
    return tmp_path


GOOD = '''\
    # Copied from anogen.original.scale
    def scale(values: list[float], factor: float) -> list[float]:
        """Multiply each value."""
        return [v * factor for v in values]  # keep the order


    class Student:
        # Copied from anogen.original.Model.forward with 2 * x->3 * x
        @staticmethod
        def forward(x: float) -> float:
            return 3 * x
    '''


def test_equal_copies_pass(tmp_path: Path) -> None:
    result = _run(_tree(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert "2 marked copies" in result.stdout


def test_a_drifted_copy_fails_and_fix_restores_it(tmp_path: Path) -> None:
    root = _tree(tmp_path, GOOD.replace("return [v * factor", "return [v * factor + 1"))
    result = _run(root)
    assert result.returncode == 1
    assert "scripts/tool.py:1: differs from anogen.original.scale" in result.stderr
    assert _run(root, "--fix").returncode == 0
    assert (root / "scripts" / "tool.py").read_text() == textwrap.dedent(GOOD)
    assert _run(root).returncode == 0


def test_a_drifted_method_with_replacements_fails(tmp_path: Path) -> None:
    result = _run(_tree(tmp_path, GOOD.replace("return 3 * x", "return 4 * x")))
    assert result.returncode == 1
    assert "differs from anogen.original.Model.forward" in result.stderr


def test_a_missing_target_or_a_stray_marker_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, GOOD.replace("anogen.original.scale", "anogen.original.shift"))
    result = _run(root)
    assert result.returncode == 1 and "no 'shift'" in result.stderr
    (root / "scripts" / "tool.py").write_text("# Copied from anogen.original.scale\nVALUE = 1\n")
    result = _run(root)
    assert result.returncode == 1 and "just above a def or class" in result.stderr


def test_the_repository_copies_match() -> None:
    result = _run(ROOT)
    assert result.returncode == 0, result.stderr
