"""Shared pieces of the app tests: a small project on disk, a window factory, mouse drags."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from anogen.data.imageio import write_image
from anogen.data.workspace import Workspace
from app.main_window import MainWindow
from app.settings import Settings


def picture(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(60, 200, (size, size, 3), dtype=np.uint8)


def write_project(tmp_path: Path) -> Path:
    """A project with one defect kind ``scratch`` (2 unmasked support images) and 2 good images."""
    sources = tmp_path / "sources"
    sources.mkdir()
    for i in range(2):
        write_image(sources / f"defect{i}.png", picture(i))
        write_image(sources / f"good{i}.png", picture(10 + i))
    root = tmp_path / "project"
    workspace = Workspace.create(root, "Test project")
    workspace.add_defect_kind("scratch")
    for i in range(2):
        workspace.add_support_image("scratch", sources / f"defect{i}.png")
    workspace.add_good_images([sources / "good0.png", sources / "good1.png"])
    workspace.save()
    return root


def window_factory(qtbot, tmp_path: Path) -> tuple[Callable[[], MainWindow], list[MainWindow]]:
    """``make()`` opens a shown main window with its own settings file; close them via the list."""
    settings_file = tmp_path / "settings.ini"
    windows: list[MainWindow] = []

    def make() -> MainWindow:
        window = MainWindow(settings=Settings(settings_file), restore_geometry=False)
        window.confirm_close = False
        qtbot.addWidget(window)
        window.resize(1200, 800)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    return make, windows


def send_mouse(view, kind, pos: QPoint, button, buttons) -> None:
    event = QMouseEvent(kind, QPointF(pos), QPointF(view.viewport().mapToGlobal(pos)), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), event)


def drag(canvas, points) -> None:
    """A left-button drag through image coordinates ``points``."""
    positions = [canvas.mapFromScene(QPointF(x, y)) for x, y in points]
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    send_mouse(canvas, QMouseEvent.Type.MouseButtonPress, positions[0], left, left)
    for pos in positions[1:]:
        send_mouse(canvas, QMouseEvent.Type.MouseMove, pos, none, left)
    send_mouse(canvas, QMouseEvent.Type.MouseButtonRelease, positions[-1], left, none)


def visible_message_boxes() -> list[QMessageBox]:
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]


def add_learned_kind_and_set(root: Path, samples: int = 3) -> str:
    """Give ``scratch`` an embedding file and the project a model path, and add a generated set
    of ``samples`` samples on the first good image; returns the set's name.

    The files are placeholders: tests that use them replace the model calls with fakes.
    """
    from anogen.data.generated import GeneratedSetWriter

    workspace = Workspace.open(root)
    embedding = root / "embeddings" / "scratch.safetensors"
    embedding.parent.mkdir(parents=True, exist_ok=True)
    embedding.write_bytes(b"placeholder")
    workspace.set_embedding("scratch", embedding)
    (root / "model").mkdir(exist_ok=True)
    workspace.project.model = str(root / "model")
    good = workspace.project.good_images[0].image
    folder = workspace.generated_dir / "set1"
    with GeneratedSetWriter(folder) as writer:
        for i in range(samples):
            writer.add(picture(100 + i), box=(10 + 10 * i, 10, 40 + 10 * i, 40), source=good, defect_kind="scratch",
                       seed=i, model="model", embedding_hash="0", steps=2, guidance=1.0, status="pending")
    workspace.import_generated_folder("set1", folder)
    workspace.save()
    return "set1"
