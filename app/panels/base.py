"""What every task panel shares: access to the Studio, the canvas, jobs and actions."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from anogen.device import DEVICE_CHOICES
from anogen.ranges import FieldRange
from app import theme
from app.canvas_controller import CanvasController
from app.engine import Job
from app.icons import icon
from app.studio import Studio
from app.widgets.fitted_note import FittedNote


class _PanelScroll(QScrollArea):
    """A vertical-only scroll area that is never narrower than its content: without a
    horizontal scroll bar, a row of buttons wider than the dock was cut off."""

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        content = self.widget()
        if content is None:
            return hint
        width = (content.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
                 + 2 * self.frameWidth())
        return QSize(max(hint.width(), width), hint.height())


class Panel(QWidget):
    name = "panel"
    title = "Panel"

    def __init__(self, studio: Studio, controller: CanvasController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.controller = controller
        self.canvas = controller.canvas
        self._actions: list[QAction] = []
        self._persisted: dict[str, QWidget] = {}  # settings kept in the project, by key
        self._defaults: dict[str, object] = {}  # their values before any project set them
        self._restoring = False
        self.body = QWidget()
        self.form = QVBoxLayout(self.body)
        self.form.setContentsMargins(10, 8, 10, 8)
        self.form.setSpacing(8)
        scroll = _PanelScroll()
        self.scroll_area = scroll  # not `scroll`: QWidget.scroll() is a method
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

    def compact(self, *combos) -> None:  # combos: QComboBox widgets
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

    @staticmethod
    def int_spin(limits: FieldRange[int], value: int) -> QSpinBox:
        """A spin box over a config field's range (anogen.ranges), starting at ``value``."""
        spin = QSpinBox()
        spin.setRange(limits.minimum, limits.maximum)
        spin.setValue(value)
        return spin

    @staticmethod
    def float_spin(limits: FieldRange[float], value: float, *, step: float | None = None,
                   decimals: int | None = None) -> QDoubleSpinBox:
        """:meth:`int_spin` for a float field; ``decimals`` before the range, which it rounds."""
        spin = QDoubleSpinBox()
        if decimals is not None:
            spin.setDecimals(decimals)
        spin.setRange(limits.minimum, limits.maximum)
        if step is not None:
            spin.setSingleStep(step)
        spin.setValue(value)
        return spin

    def heading(self, text: str) -> QLabel:
        label = QLabel(text)
        font = label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.08)
        label.setFont(font)
        self.form.addWidget(label)
        return label

    def note(self, text: str = "", warning: bool = False, *, fitted: bool = False) -> QLabel:
        """A muted (or, with ``warning``, red) wrapped note; ``fitted`` for one in a pane under
        the canvas, where the layout must be told the height its lines need (FittedNote)."""
        label = FittedNote(text) if fitted else QLabel(text)
        label.setWordWrap(True)
        if warning:
            label.setStyleSheet(f"color: {theme.colors().bad.name()};")
        else:
            label.setStyleSheet(f"color: {theme.colors().muted.name()};")
        return label

    def is_running(self, job: Job | None) -> bool:
        return job is not None and job.is_active()

    # ------------------------------------------------------------------ settings kept per project
    def persist(self, key: str, widget: QWidget) -> None:
        """Keep ``widget``'s value (a spin box's number, a combo box's or a line's text) in the project,
        under ``view.settings.<panel>.<key>``, and put it back when the project is reopened."""
        self._persisted[key] = widget
        self._defaults[key] = self._value(widget)
        if isinstance(widget, QSpinBox | QDoubleSpinBox):
            widget.valueChanged.connect(lambda _v: self._store_settings())
        elif isinstance(widget, QComboBox):
            widget.currentIndexChanged.connect(lambda _i: self._store_settings())
        elif isinstance(widget, QCheckBox):
            widget.toggled.connect(lambda _on: self._store_settings())
        elif isinstance(widget, QLineEdit):
            widget.editingFinished.connect(self._store_settings)
        else:
            raise TypeError(f"cannot keep a {type(widget).__name__} in the project")

    def stored_settings(self) -> dict:
        settings = self.studio.view_state().get("settings")
        panel = settings.get(self.name) if isinstance(settings, dict) else None
        return dict(panel) if isinstance(panel, dict) else {}

    def _store_settings(self) -> None:
        if self._restoring or self.studio.project is None:
            return
        values = {key: self._value(widget) for key, widget in self._persisted.items()}
        settings = self.studio.view_state().get("settings")
        settings = dict(settings) if isinstance(settings, dict) else {}
        settings[self.name] = values
        self.studio.update_view(settings=settings)

    @staticmethod
    def _value(widget: QWidget) -> object:
        if isinstance(widget, QDoubleSpinBox):
            return float(widget.value())
        if isinstance(widget, QSpinBox):
            return int(widget.value())
        if isinstance(widget, QComboBox):
            return widget.currentText()
        if isinstance(widget, QCheckBox):
            return widget.isChecked()
        if isinstance(widget, QLineEdit):
            return widget.text().strip()
        raise TypeError(f"cannot keep a {type(widget).__name__} in the project")  # persist() refused it

    def restore_settings(self) -> None:
        """Put the project's stored values into the widgets (defaults stay for the others)."""
        stored = self.stored_settings()
        self._restoring = True
        try:
            for key, widget in self._persisted.items():
                value = stored.get(key, self._defaults[key])  # a project without them gets the defaults
                if isinstance(widget, QDoubleSpinBox) and isinstance(value, (int, float)):
                    widget.setValue(float(value))
                elif isinstance(widget, QSpinBox) and isinstance(value, int):
                    widget.setValue(value)
                elif isinstance(widget, QComboBox) and isinstance(value, str) and widget.findText(value) >= 0:
                    widget.setCurrentIndex(widget.findText(value))
                elif isinstance(widget, QCheckBox) and isinstance(value, bool):
                    widget.setChecked(value)
                elif isinstance(widget, QLineEdit) and isinstance(value, str):
                    widget.setText(value)
        finally:
            self._restoring = False

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
