"""Scrolling a panel must not change the settings the pointer happens to pass over.

Sliders, spin boxes and combo boxes take the mouse wheel only while they have the
keyboard focus (click them first); otherwise the wheel scrolls the panel around them.
A scroll under way keeps scrolling: a focused field that slides under the pointer while
the panel moves does not take the next wheel turns (the learning rate typed a moment
ago would change without the user seeing it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

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
# Wheel turns closer together than this belong to one scroll: a hand spinning the wheel
# sends them 10-100 ms apart, a deliberate pause to change a value is longer.
SCROLL_GESTURE_S = 0.6
_DELIBERATE = (QEvent.Type.FocusIn, QEvent.Type.MouseButtonPress)


class WheelGuard(QObject):
    """An event filter: a wheel event on an unfocused value widget, or one that continues
    a scroll of the panel, goes to the enclosing scroll area. Clicking or tabbing to the
    widget ends the scroll."""

    def __init__(self, parent: QObject | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(parent)
        self.clock = clock
        self._last_scroll: dict[int, float] = {}  # id(scroll area) -> when the wheel last scrolled it

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if not isinstance(watched, QWidget):
            return False
        if event.type() in _DELIBERATE and isinstance(watched, GUARDED):
            # Clicking or tabbing to a field ends the scroll: the next turn is meant for it.
            area = _scroll_area_of(watched)
            if area is not None:
                self._last_scroll.pop(id(area), None)
            return False
        if event.type() != QEvent.Type.Wheel:
            return False
        if not isinstance(watched, GUARDED):  # a scroll area's viewport: the panel scrolls itself
            owner = watched.parentWidget()
            if isinstance(owner, QAbstractScrollArea):
                self._last_scroll[id(owner)] = self.clock()
            return False
        area = _scroll_area_of(watched)
        scrolling = area is not None and self.clock() - self._last_scroll.get(id(area), -1e9) < SCROLL_GESTURE_S
        if watched.hasFocus() and not scrolling:
            return False
        if area is not None:
            self._last_scroll[id(area)] = self.clock()
            QApplication.sendEvent(area.verticalScrollBar(), event)
        return True  # the value stays as it was, scrolled or not


def _scroll_area_of(widget: QWidget) -> QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea):
            return parent
        parent = parent.parentWidget()
    return None


def guard_wheel(root: QWidget, guard: WheelGuard | None = None) -> WheelGuard:
    """Install the guard on every slider, spin box and combo box under ``root`` (scroll bars
    excepted), and on the viewports of its scroll areas, which tell it when a scroll is under way."""
    guard = guard or WheelGuard(root)
    for widget in root.findChildren(QWidget):
        if isinstance(widget, GUARDED) and not isinstance(widget, QScrollBar):
            # WheelFocus would let the first wheel turn focus the widget and then change it.
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            widget.installEventFilter(guard)
        elif isinstance(widget, QAbstractScrollArea):
            widget.viewport().installEventFilter(guard)
    return guard
