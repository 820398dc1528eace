"""Finding the files shipped in ``resources/`` (demo model, icons, configs).

One helper for every caller, so the same code works from a source checkout, an
editable install, an installed wheel and a PyInstaller bundle (where files live under ``sys._MEIPASS``).
Nothing is ever written into this folder: user data goes to the project folder or the
platform's data folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from anogen.errors import ModelError

DEMO_MODEL = ("models", "demo-ldm")
PACKAGED_RESOURCES = "_resources"  # inside the installed package; see setup.py


def resources_root() -> Path:
    """The folder holding the shipped resources.

    In order: ``$ANOGEN_RESOURCES``; a PyInstaller bundle's ``resources/``; the copy an
    installed wheel carries inside the package (``anogen/_resources``, put there by
    ``setup.py``); the checkout's ``resources/`` next to the package (source tree,
    editable install).
    """
    override = os.environ.get("ANOGEN_RESOURCES")
    if override:
        return Path(override)
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    package = Path(__file__).resolve().parent
    packaged = package / PACKAGED_RESOURCES
    if packaged.is_dir():
        return packaged
    return package.parent / "resources"


def resource_path(*parts: str) -> Path:
    return resources_root().joinpath(*parts)


def demo_model_path() -> Path:
    """The embedded demo diffusion model, or a clear error saying where it should be."""
    path = resource_path(*DEMO_MODEL)
    if not (path / "model_index.json").is_file():
        raise ModelError(
            f"the demo model is missing: expected a diffusers folder at {path} "
            "(it ships with the repository; rebuild it with scripts/train_demo_model.py)"
        )
    return path
