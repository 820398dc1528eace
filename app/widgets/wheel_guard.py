"""Scrolling a panel must not change the settings the pointer happens to pass over.

Sliders, spin boxes and combo boxes take the mouse wheel only while they have the
keyboard focus (click them first); otherwise the wheel scrolls the panel around them.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QScrollBar,
    QWidget,
)

GUARDED = (QAbstractSlider, QAbstractSpinBox, QComboBox)


class WheelGuard(QObject):
    """An event filter: a wheel event on an unfocused value widget goes to the enclosing scroll area."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget) or watched.hasFocus():
            return False
        area = _scroll_area_of(watched)
        if area is not None:
            bar = area.verticalScrollBar()
            QApplication.sendEvent(bar, event)
        return True  # the value stays as it was, scrolled or not


def _scroll_area_of(widget: QWidget) -> QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea):
            return parent
        parent = parent.parentWidget()
    return None


def guard_wheel(root: QWidget, guard: WheelGuard | None = None) -> WheelGuard:
    """Install the guard on every slider, spin box and combo box under ``root`` (scroll bars excepted)."""
    guard = guard or WheelGuard(root)
    for widget in root.findChildren(QWidget):
        if isinstance(widget, GUARDED) and not isinstance(widget, QScrollBar):
            # WheelFocus would let the first wheel turn focus the widget and then change it.
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            widget.installEventFilter(guard)
    return guard
