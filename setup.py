"""Build hook: the wheel carries ``resources/`` (the demo model) as ``anogen/_resources/``.

Everything else about the build is in ``pyproject.toml``. ``resources/`` stays at the top
of the checkout, where the PyInstaller spec, the scripts and the docs expect it, and it is
not a Python package, so setuptools' package data cannot reach it; this copies it into
the built package instead. :func:`anogen.resources.resources_root` looks there first, so
an installed wheel finds its demo model wherever it is installed. An editable install
keeps reading the checkout's ``resources/`` and gets no copy.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = Path(__file__).resolve().parent / "resources"
PACKAGED_AS = ("anogen", "_resources")  # keep in step with anogen.resources.PACKAGED_RESOURCES


class build_py_with_resources(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not RESOURCES.is_dir():
            return
        target = Path(self.build_lib).joinpath(*PACKAGED_AS)
        shutil.copytree(RESOURCES, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".gitkeep"))


setup(cmdclass={"build_py": build_py_with_resources})
