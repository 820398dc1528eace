"""The state the windows share: the open project, the selection, saving, jobs.

Panels and the main window talk through one :class:`Studio`: they edit
``studio.workspace`` (an :class:`anogen.data.workspace.Workspace`) and call
:meth:`Studio.edited`, which saves the manifest atomically at once, so a crash or a kill
loses at most the stroke in progress. Large files (masks of big images) are written on a
background thread so painting never waits for the disk.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from anogen.data.project_file import DefectKind
from anogen.data.workspace import ReadOnlyProjectError, Workspace
from anogen.errors import AnoGenError
from app.engine import JobEngine
from app.settings import Settings

log = logging.getLogger(__name__)

VIEW_SAVE_DELAY_MS = 800
MODEL_UNCHECKED, MODEL_CHECKING, MODEL_OK, MODEL_FAILED = "unchecked", "checking", "ok", "failed"
# What training does with generated samples nobody reviewed (a per-project setting of the Generate panel).
REVIEW_CHOICES = ("used for training unless rejected", "not used until accepted")


@dataclass(frozen=True)
class Selection:
    """What the canvas shows, as picked in the project tree or a panel.

    ``kind`` is one of ``project``, ``defect_kind``, ``support``, ``goods``, ``good``,
    ``generated_set``, ``sample``, ``embedding``, ``detector``; ``name`` the defect kind,
    good image, set or detector; ``index`` the support image or sample number.
    """

    kind: str = "project"
    name: str = ""
    index: int = -1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Selection:
        try:
            return cls(str(data["kind"]), str(data.get("name", "")), int(data.get("index", -1)))
        except (TypeError, KeyError, ValueError):
            return cls()


class Studio(QObject):
    projectChanged = Signal()          # a project was opened or closed
    projectEdited = Signal(str)        # what changed: defects, good, generated, detectors, model
    selectionChanged = Signal(object)  # Selection
    dirtyChanged = Signal(bool)        # unsaved changes exist
    saveFailed = Signal(str)           # a save error, for a dialog
    message = Signal(str)              # a line for the status bar / job log
    modelStateChanged = Signal()       # a model check started or ended (see model_ready)

    def __init__(self, settings: Settings, engine: JobEngine, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.engine = engine
        self.workspace: Workspace | None = None
        self.selection = Selection()
        # The diffusion model the user last chose and how its check went. The project keeps
        # the last model that passed (project.model); a failed choice never replaces it.
        self.model_state = MODEL_UNCHECKED
        self.model_candidate = ""
        self._dirty = False
        self._read_only_reported = False
        self._view_pending = False
        self._pending_writes = 0
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="anogen-save")
        self._write_lock = threading.Lock()
        self._latest_write: dict[str, int] = {}
        self._write_counter = 0
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(VIEW_SAVE_DELAY_MS)
        self._view_timer.timeout.connect(self.save)

    # ------------------------------------------------------------------ project
    @property
    def project(self):
        return None if self.workspace is None else self.workspace.project

    @property
    def open_workspace(self) -> Workspace:
        """The open project's workspace, for actions that need one (disabled without a project)."""
        if self.workspace is None:
            raise RuntimeError("no project is open")
        return self.workspace

    def set_workspace(self, workspace: Workspace | None) -> None:
        self.flush()
        previous, self.workspace = self.workspace, workspace
        if previous is not None and previous is not workspace:
            previous.close()  # gives the project's lock back to other processes
        self.selection = Selection()
        self._set_dirty(False)
        self._read_only_reported = False
        # A read-only project (another process has it open) is not written to, not even its log.
        writable = workspace is not None and not workspace.read_only
        self.engine.set_log_file(workspace.log_path if workspace is not None and writable else None)
        self.projectChanged.emit()
        if workspace is not None and workspace.read_only:
            self.message.emit(f"Project {workspace.read_only_reason()}: changes will not be saved")

    def _report_read_only(self) -> None:
        """Say once per project, in a dialog, that a read-only project keeps no changes."""
        assert self.workspace is not None
        reason = self.workspace.read_only_reason()
        if not self._read_only_reported:
            self._read_only_reported = True
            self.saveFailed.emit(f"This project is open {reason}. Changes made here are not saved; "
                                 "close it in the other process and open it again to edit it.")
        else:
            self.message.emit(f"Not saved: project {reason}")

    def is_dirty(self) -> bool:
        return self._dirty or self._pending_writes > 0

    def _set_dirty(self, dirty: bool) -> None:
        was = self.is_dirty()
        self._dirty = dirty
        if self.is_dirty() != was:
            self.dirtyChanged.emit(self.is_dirty())

    def edited(self, area: str, *, save: bool = True) -> None:
        """Record that the project changed; saves the manifest now unless ``save`` is False."""
        self._set_dirty(True)
        self.projectEdited.emit(area)
        if save:
            self.save()

    def save(self) -> bool:
        """Write the manifest (atomic). Returns False and reports when it fails."""
        if self.workspace is None:
            return True
        self._view_timer.stop()
        if self.workspace.read_only:
            self._report_read_only()
            return False
        try:
            self.workspace.save()
        except (OSError, AnoGenError) as exc:
            log.error("saving %s failed: %s", self.workspace.root, exc)
            self.saveFailed.emit(f"Could not save the project: {exc}")
            return False
        self._view_pending = False
        self._set_dirty(False)
        return True

    def set_model_state(self, state: str, candidate: str) -> None:
        """Record a model check: ``checking``, ``ok`` or ``failed`` for the model ``candidate``."""
        self.model_state, self.model_candidate = state, candidate
        self.modelStateChanged.emit()

    def model_ready(self) -> bool:
        """True when jobs may use ``project.model``: one is set and the user's latest choice
        is not still being checked or known to be broken."""
        return (self.project is not None and bool(self.project.model)
                and self.model_state not in (MODEL_CHECKING, MODEL_FAILED))

    def review_required(self) -> bool:
        """True when only accepted samples may train (the engineer asked for review first)."""
        settings = self.view_state().get("settings")
        generate = settings.get("generate") if isinstance(settings, dict) else None
        return isinstance(generate, dict) and generate.get("review") == REVIEW_CHOICES[1]

    def defect_kind(self, name: str | None) -> DefectKind | None:
        """The open project's defect kind called ``name``; None without a project, a name,
        or such a kind (the panels' combo boxes can lag a removal by an event)."""
        if self.project is None or not name:
            return None
        try:
            return self.project.defect_kind(name)
        except (KeyError, AnoGenError, ValueError):
            return None

    def shared_kind(self) -> str:
        """The defect kind the panels share: the one last chosen, painted or learned."""
        kind = self.view_state().get("kind")
        return kind if isinstance(kind, str) else ""

    def view_state(self) -> dict[str, Any]:
        """The free-form GUI state stored in the project (``project.view``)."""
        return {} if self.project is None else self.project.view

    def update_view(self, **values: Any) -> None:
        """Change GUI state kept in the project; saved shortly after, in one write."""
        if self.project is None:
            return
        changed = False
        for key, value in values.items():
            if self.project.view.get(key) != value:
                self.project.view[key] = value
                changed = True
        if changed:  # view state is not "unsaved work": no title marker, saved shortly after
            self._view_pending = True
            self._view_timer.start()

    # ------------------------------------------------------------------ background writes
    def write_in_background(self, key: str, write: Callable[[], Any],
                            done: Callable[[Any], None] | None = None) -> None:
        """Run ``write()`` on the save thread; only the newest write per ``key`` runs.

        ``done(result)`` then runs on the UI thread, followed by a manifest save.
        """
        with self._write_lock:
            self._write_counter += 1
            ticket = self._write_counter
            self._latest_write[key] = ticket
        self._pending_writes += 1
        self.dirtyChanged.emit(True)

        def job() -> Any:
            with self._write_lock:
                if self._latest_write.get(key) != ticket:
                    return _SKIPPED
            return write()

        future = self._writer.submit(job)
        future.add_done_callback(lambda f: QTimer.singleShot(0, self, lambda: self._write_done(f, done)))

    def _write_done(self, future: concurrent.futures.Future, done: Callable[[Any], None] | None) -> None:
        self._pending_writes -= 1
        try:
            result = future.result()
        except ReadOnlyProjectError:
            if self.workspace is not None:
                self._report_read_only()
            self.dirtyChanged.emit(self.is_dirty())
            return
        except (OSError, AnoGenError) as exc:
            self.saveFailed.emit(f"Could not save: {exc}")
            self.dirtyChanged.emit(self.is_dirty())
            return
        if result is not _SKIPPED and done is not None:
            done(result)
        if result is not _SKIPPED:
            self.save()
        self.dirtyChanged.emit(self.is_dirty())

    def flush(self, timeout_s: float = 30.0) -> None:
        """Finish pending background writes and save; used before close and project switch."""
        import time

        from PySide6.QtCore import QCoreApplication

        deadline = time.monotonic() + timeout_s
        while self._pending_writes > 0 and time.monotonic() < deadline:
            QCoreApplication.processEvents()
            time.sleep(0.005)
        if self._dirty or self._view_pending:
            self.save()

    def close(self) -> None:
        self.flush()
        self._writer.shutdown(wait=True)
        if self.workspace is not None:
            self.workspace.close()

    # ------------------------------------------------------------------ selection
    def select(self, selection: Selection) -> None:
        self.selection = selection
        self.selectionChanged.emit(selection)
        self.update_view(selection=selection.to_json())

    def resolve(self, rel: str) -> Path:
        assert self.workspace is not None
        return self.workspace.resolve(rel)


class _Skipped:
    def __repr__(self) -> str:
        return "<skipped>"


_SKIPPED = _Skipped()
