"""The built wheel works like the checkout: installed elsewhere, it finds its demo model.

Builds a wheel from a copy of the source tree (so the checkout's build/ is never touched),
installs it with ``--no-deps`` into a fresh venv that sees this interpreter's packages
(torch, Qt, ...) and runs it from a folder outside the checkout. No demo run: finding
every file of the demo model and starting both commands is what the wheel must get right.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "anogen", "app", "resources")

pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ANOGEN_RESOURCES", "PYTHONPATH")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_resources"))
        else:
            shutil.copy2(path, source / name)
    # --no-build-isolation: build with this interpreter's setuptools, offline.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist",
          source], cwd=base)
    [wheel] = (base / "dist").glob("anogen_studio-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=base)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=base)
    return venv


def test_installed_wheel_finds_the_demo_model_outside_the_checkout(installed, tmp_path):
    python = installed / "bin" / "python"
    code = ("import anogen, anogen.resources as r, app.main_window as w; "
            "print(anogen.__file__); print(r.demo_model_path()); print(w.demo_model_folder())")
    lines = _run([python, "-c", code], cwd=tmp_path).stdout.splitlines()
    package, model, app_model = (Path(line) for line in lines[-3:])
    assert package.is_relative_to(installed), f"imported {package}, not the installed wheel"
    assert model == app_model and model.is_relative_to(installed)
    shipped = ROOT / "resources" / "models" / "demo-ldm"
    expected = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert sorted(p.relative_to(model) for p in model.rglob("*") if p.is_file()) == expected
    for relative in expected:
        assert (model / relative).stat().st_size == (shipped / relative).stat().st_size


def test_installed_commands_start(installed, tmp_path):
    help_text = _run([installed / "bin" / "anogen", "--help"], cwd=tmp_path).stdout
    assert "export-data" in help_text and "import" in help_text
    _run([installed / "bin" / "anogen-studio", "--version"], cwd=tmp_path)
