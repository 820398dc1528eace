"""User settings persisted with QSettings: recent projects, window layout, preferences.

Project state (masks, boxes, the last view inside a project) lives in the project folder
through :class:`anogen.data.workspace.Workspace`; only per-user things live here.
Tests point the store at a temporary INI file with ``ANOGEN_STUDIO_SETTINGS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from anogen.compute import THREADS_AUTOMATIC, threads_from_setting

ORGANIZATION = "AnoGen"
APPLICATION = "AnoGen Studio"
SETTINGS_ENV = "ANOGEN_STUDIO_SETTINGS"
MAX_RECENT = 10


class Settings:
    """Typed accessors over one QSettings store."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        path = path or os.environ.get(SETTINGS_ENV)
        if path:
            self._store = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self._store = QSettings(ORGANIZATION, APPLICATION)

    # --------------------------------------------------------------- generic helpers
    def value(self, key: str, default: Any = None, kind: type | None = None) -> Any:
        raw = self._store.value(key, default)
        if raw is None or kind is None:
            return raw
        try:
            if kind is bool:
                return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
            return kind(raw)
        except (TypeError, ValueError):
            return default

    def set_value(self, key: str, value: Any) -> None:
        self._store.setValue(key, value)

    def sync(self) -> None:
        self._store.sync()

    # --------------------------------------------------------------- recent projects
    def recent_projects(self) -> list[Path]:
        """Recently opened project folders that still exist, newest first."""
        raw = self._store.value("recent/projects", [])
        if isinstance(raw, str):  # QSettings returns a bare string for one-element lists
            raw = [raw]
        if not isinstance(raw, list):
            return []
        return [Path(p) for p in raw if p and Path(p).is_dir()]

    def add_recent_project(self, folder: str | os.PathLike) -> None:
        folder = str(Path(folder).resolve())
        items = [str(p) for p in self.recent_projects() if str(p) != folder]
        self._store.setValue("recent/projects", [folder, *items][:MAX_RECENT])

    def clear_recent_projects(self) -> None:
        self._store.setValue("recent/projects", [])

    # --------------------------------------------------------------- window layout
    def window_geometry(self) -> QByteArray | None:
        value = self._store.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    def set_window_geometry(self, data: QByteArray) -> None:
        self._store.setValue("window/geometry", data)

    def window_state(self) -> QByteArray | None:
        value = self._store.value("window/state")
        return value if isinstance(value, QByteArray) else None

    def set_window_state(self, data: QByteArray) -> None:
        self._store.setValue("window/state", data)

    # --------------------------------------------------------------- preferences
    @property
    def last_panel(self) -> str:
        return str(self.value("ui/last_panel", "defects"))

    @last_panel.setter
    def last_panel(self, name: str) -> None:
        self._store.setValue("ui/last_panel", name)

    @property
    def theme(self) -> str:
        return str(self.value("ui/theme", "auto"))

    @theme.setter
    def theme(self, choice: str) -> None:
        self._store.setValue("ui/theme", choice)

    @property
    def brush_radius(self) -> int:
        return max(1, self.value("canvas/brush_radius", 12, int))

    @brush_radius.setter
    def brush_radius(self, radius: int) -> None:
        self._store.setValue("canvas/brush_radius", int(radius))

    @property
    def mask_opacity(self) -> float:
        return min(1.0, max(0.0, self.value("canvas/mask_opacity", 0.5, float)))

    @mask_opacity.setter
    def mask_opacity(self, opacity: float) -> None:
        self._store.setValue("canvas/mask_opacity", float(opacity))

    @property
    def mask_color(self) -> str:
        """The mask overlay's colour as ``#rrggbb``; empty follows the theme."""
        return str(self.value("canvas/mask_color", "") or "")

    @mask_color.setter
    def mask_color(self, value: str) -> None:
        self._store.setValue("canvas/mask_color", value)

    @property
    def reopen_last_project(self) -> bool:
        """Open the most recent project at start-up (when no project is named on the command line)."""
        return bool(self.value("ui/reopen_last_project", False, bool))

    @reopen_last_project.setter
    def reopen_last_project(self, on: bool) -> None:
        self._store.setValue("ui/reopen_last_project", bool(on))

    @property
    def cpu_threads(self) -> int:
        """torch CPU threads for jobs; ``THREADS_AUTOMATIC`` (0) lets the compute policy decide."""
        return threads_from_setting(self.value("compute/threads", THREADS_AUTOMATIC)) or THREADS_AUTOMATIC

    @cpu_threads.setter
    def cpu_threads(self, count: int) -> None:
        self._store.setValue("compute/threads", int(count))

    @property
    def last_folder(self) -> str:
        return str(self.value("ui/last_folder", str(Path.home())))

    @last_folder.setter
    def last_folder(self, folder: str) -> None:
        self._store.setValue("ui/last_folder", folder)
