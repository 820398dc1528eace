"""What every task panel shares: access to the Studio, the canvas, jobs and actions."""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import QComboBox, QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

from anogen.device import DEVICE_CHOICES
from app import theme
from app.canvas_controller import CanvasController
from app.engine import Job
from app.icons import icon
from app.studio import Studio


class Panel(QWidget):
    name = "panel"
    title = "Panel"

    def __init__(self, studio: Studio, controller: CanvasController, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.controller = controller
        self.canvas = controller.canvas
        self._actions: list[QAction] = []
        self.body = QWidget()
        self.form = QVBoxLayout(self.body)
        self.form.setContentsMargins(10, 8, 10, 8)
        self.form.setSpacing(8)
        scroll = QScrollArea()
        self.scroll = scroll
        scroll.setWidget(self.body)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        studio.engine.jobStarted.connect(lambda _job: self.update_enabled())
        studio.engine.jobFinished.connect(lambda _job, _r: self.update_enabled())
        studio.engine.jobFailed.connect(lambda _job, _m, _d: self.update_enabled())
        studio.engine.jobCancelled.connect(lambda _job: self.update_enabled())

    # ------------------------------------------------------------------ helpers
    def action(self, text: str, shortcut: str | list[str], slot: Callable, icon_name: str = "") -> QAction:
        """An action listed in the Run menu and in Help -> Shortcuts."""
        action = QAction(icon(icon_name) if icon_name else QIcon(), text, self)
        keys = shortcut if isinstance(shortcut, list) else [shortcut]
        action.setShortcuts([QKeySequence(k) for k in keys])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setToolTip(f"{text.replace('&', '')} ({keys[0]})")
        action.triggered.connect(lambda _checked=False: slot())
        self._actions.append(action)
        return action

    def menu_actions(self) -> list[QAction]:
        return list(self._actions)

    def compact(self, *combos) -> None:  # noqa: ANN002 - QComboBox widgets
        """Let combo boxes shrink with the panel instead of widening it to their longest item."""
        from PySide6.QtWidgets import QComboBox, QSizePolicy

        for combo in combos:
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
            combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def device_chooser(self) -> QComboBox:
        """The device a panel's jobs run on; the choices are the library's."""
        combo = QComboBox()
        combo.addItems(list(DEVICE_CHOICES))
        combo.setToolTip("auto picks CUDA, then Apple MPS, then the CPU")
        return combo

    def heading(self, text: str) -> QLabel:
        label = QLabel(text)
        font = label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.08)
        label.setFont(font)
        self.form.addWidget(label)
        return label

    def note(self, text: str = "", warning: bool = False) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        if warning:
            label.setStyleSheet(f"color: {theme.colors().bad.name()};")
        else:
            label.setStyleSheet(f"color: {theme.colors().muted.name()};")
        return label

    def is_running(self, job: Optional[Job]) -> bool:
        return job is not None and job.is_active()

    # ------------------------------------------------------------------ hooks
    def project_changed(self) -> None:
        """A project was opened or closed."""
        self.update_enabled()

    def activated(self) -> None:
        """The panel became the visible tab."""

    def update_enabled(self) -> None:
        """Enable the buttons that make sense now."""

    def prepare_for_screenshot(self) -> None:
        """Bring the panel into its most telling state for a docs screenshot."""
