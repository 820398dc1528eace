"""Icons from qtawesome (Material Design Icons), tinted for the active theme.

Widgets ask for icons by what they mean (``icon("undo")``), not by font glyph names, so
the icon set can change in one place.
"""

from __future__ import annotations

import logging
from functools import cache

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtGui import QIcon, QIconEngine, QPainter, QPixmap

from app import theme

log = logging.getLogger(__name__)

GLYPHS: dict[str, str] = {
    "new": "mdi6.folder-plus-outline",
    "open": "mdi6.folder-open-outline",
    "recent": "mdi6.history",
    "demo": "mdi6.school-outline",
    "save": "mdi6.content-save-outline",
    "quit": "mdi6.exit-to-app",
    "undo": "mdi6.undo",
    "redo": "mdi6.redo",
    "brush": "mdi6.brush",
    "eraser": "mdi6.eraser",
    "fill": "mdi6.format-color-fill",
    "polygon": "mdi6.vector-polygon",
    "next": "mdi6.chevron-right",
    "previous": "mdi6.chevron-left",
    "mask": "mdi6.layers-outline",
    "contrast": "mdi6.contrast-circle",
    "filter": "mdi6.filter-outline",
    "clear": "mdi6.delete-sweep-outline",
    "box": "mdi6.vector-rectangle",
    "pan": "mdi6.hand-back-right-outline",
    "fit": "mdi6.fit-to-screen-outline",
    "actual-size": "mdi6.magnify-scan",
    "zoom-in": "mdi6.magnify-plus-outline",
    "zoom-out": "mdi6.magnify-minus-outline",
    "add": "mdi6.plus",
    "remove": "mdi6.minus",
    "delete": "mdi6.trash-can-outline",
    "import": "mdi6.image-plus",
    "defect": "mdi6.alert-decagram-outline",
    "image": "mdi6.image-outline",
    "good": "mdi6.check-decagram-outline",
    "generated": "mdi6.creation",
    "embedding": "mdi6.vector-point",
    "detector": "mdi6.radar",
    "learn": "mdi6.school",
    "preview": "mdi6.eye-outline",
    "generate": "mdi6.auto-fix",
    "train": "mdi6.play-circle-outline",
    "cancel": "mdi6.stop-circle-outline",
    "accept": "mdi6.check-circle-outline",
    "reject": "mdi6.close-circle-outline",
    "regenerate": "mdi6.refresh",
    "compare": "mdi6.compare-horizontal",
    "export": "mdi6.export",
    "propose": "mdi6.auto-fix",
    "model": "mdi6.cube-outline",
    "help": "mdi6.help-circle-outline",
    "keyboard": "mdi6.keyboard-outline",
    "warning": "mdi6.alert-outline",
    "heatmap": "mdi6.fire",
    "queue": "mdi6.tray-full",
}


@cache
def _icon(name: str, dark: bool) -> QIcon:
    glyph = GLYPHS.get(name, name)
    try:
        import qtawesome

        color = theme.DARK.text if dark else theme.LIGHT.text
        disabled = theme.DARK.muted if dark else theme.LIGHT.muted
        return qtawesome.icon(glyph, color=color.name(), color_disabled=disabled.name())
    except Exception as exc:  # noqa: BLE001 - a missing font must not stop the app; the text label remains
        log.warning("icon %s (%s) unavailable: %s", name, glyph, exc)
        return QIcon()


class _ThemedIconEngine(QIconEngine):
    """Draws the glyph in the colours of the theme active at paint time, so icons follow
    a switch between light and dark without rebuilding any widget."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        _icon(self.name, theme.is_dark()).paint(painter, rect, Qt.AlignmentFlag.AlignCenter, mode, state)

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        pixmap = QPixmap(size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        self.paint(painter, QRect(QPoint(0, 0), size), mode, state)
        painter.end()
        return pixmap

    def clone(self) -> QIconEngine:
        return _ThemedIconEngine(self.name)


def icon(name: str) -> QIcon:
    """The icon for ``name`` (a key of :data:`GLYPHS` or a qtawesome glyph id), drawn in
    the colours of the current theme whenever it is painted."""
    if _icon(name, theme.is_dark()).isNull():
        return QIcon()
    return QIcon(_ThemedIconEngine(name))
