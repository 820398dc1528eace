"""A grid of thumbnails with a caption and a status colour per item."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QWidget

from app import theme
from app.canvas.qimage import rgb_to_qimage

KEY_ROLE = Qt.ItemDataRole.UserRole + 1


def thumbnail(rgb: np.ndarray, side: int, border: QColor | None = None) -> QPixmap:
    """A square-fitted thumbnail of an RGB array, with an optional coloured frame."""
    image = rgb_to_qimage(rgb).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                      Qt.TransformationMode.SmoothTransformation)
    pixmap = QPixmap(side, side)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.drawImage((side - image.width()) // 2, (side - image.height()) // 2, image)
    if border is not None:
        painter.setPen(QPen(border, 4))
        painter.drawRect(2, 2, side - 4, side - 4)
    painter.end()
    return pixmap


class Gallery(QListWidget):
    """Thumbnails in a wrapping grid; ``itemActivatedKey`` gives back the item's key."""

    itemSelectedKey = Signal(object)

    def __init__(self, side: int = 96, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.side = side
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(side, side))
        self.setGridSize(QSize(side + 16, side + 34))
        self.setUniformItemSizes(True)
        self.setWordWrap(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setMinimumHeight(side + 44)
        self.currentItemChanged.connect(self._current_changed)

    def clear(self) -> None:
        """Remove every item without reporting a selection (only the user selects)."""
        self.blockSignals(True)
        super().clear()
        self.blockSignals(False)

    def add(self, key: Any, rgb: np.ndarray, caption: str, status: str = "") -> QListWidgetItem:
        item = QListWidgetItem(self._icon(rgb, status), caption)
        item.setData(KEY_ROLE, key)
        item.setToolTip(caption)
        self.addItem(item)
        return item

    def set_status(self, item: QListWidgetItem, rgb: np.ndarray, caption: str, status: str) -> None:
        item.setIcon(self._icon(rgb, status))
        item.setText(caption)

    def _icon(self, rgb: np.ndarray, status: str) -> QIcon:
        pixmap = thumbnail(rgb, self.side, self._status_color(status))
        icon = QIcon(pixmap)
        icon.addPixmap(pixmap, QIcon.Mode.Selected)  # true colours when selected, not tinted
        return icon

    def keys(self) -> list[Any]:
        return [self.item(i).data(KEY_ROLE) for i in range(self.count())]

    def selected_keys(self) -> list[Any]:
        return [item.data(KEY_ROLE) for item in self.selectedItems()]

    def item_for(self, key: Any) -> QListWidgetItem | None:
        for i in range(self.count()):
            if self.item(i).data(KEY_ROLE) == key:
                return self.item(i)
        return None

    @staticmethod
    def _status_color(status: str) -> QColor | None:
        c = theme.colors()
        return {"accepted": c.good, "pass": c.good, "rejected": c.bad, "fail": c.bad}.get(status)

    def _current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is not None:
            self.itemSelectedKey.emit(current.data(KEY_ROLE))
