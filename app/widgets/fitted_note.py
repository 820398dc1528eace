"""A word-wrapped note that claims the height its text needs."""

from __future__ import annotations

from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QWidget


class FittedNote(QLabel):
    """A word-wrapped label whose minimum height follows its text at its current width.

    A layout in a tab page (the panes under the canvas) does not ask a label for its
    height-for-width, so a note of two lines got one and was painted over the thumbnails
    above it; the minimum height makes the layout leave room (the gallery shrinks and scrolls).
    """

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)

    def setText(self, text: str) -> None:
        super().setText(text)
        self._fit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit()

    def _fit(self) -> None:
        needed = self.heightForWidth(max(1, self.width())) if self.text() else 0
        if needed >= 0 and needed != self.minimumHeight():
            self.setMinimumHeight(needed)
