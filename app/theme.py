"""Light and dark themes that follow the system colour scheme.

Qt's Fusion style with a hand-picked palette looks the same on every platform, so the
screenshots in the docs match what users see. When the system switches between light
and dark (Qt >= 6.5 reports it through ``QStyleHints.colorSchemeChanged``) the palette
follows, and widgets that draw their own colours listen to :data:`theme_changed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal, SignalInstance
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

THEME_CHOICES = ("auto", "light", "dark")


@dataclass(frozen=True)
class Colors:
    """Colours for things the app paints itself (canvas overlays, curves)."""

    window: QColor
    base: QColor
    text: QColor
    muted: QColor
    accent: QColor
    canvas_background: QColor
    grid: QColor
    good: QColor
    bad: QColor
    curve: tuple[QColor, ...]


LIGHT = Colors(
    window=QColor("#f3f3f3"), base=QColor("#ffffff"), text=QColor("#1d1d1f"),
    muted=QColor("#6e6e73"), accent=QColor("#2f6fde"), canvas_background=QColor("#d9d9dc"),
    grid=QColor("#d0d0d4"), good=QColor("#1f9d55"), bad=QColor("#d64545"),
    curve=(QColor("#2f6fde"), QColor("#e07b1a"), QColor("#1f9d55"), QColor("#b8336a"), QColor("#7a5cc4")),
)
DARK = Colors(
    window=QColor("#232427"), base=QColor("#1b1c1e"), text=QColor("#e8e8ea"),
    muted=QColor("#9a9aa0"), accent=QColor("#5b9bff"), canvas_background=QColor("#121314"),
    grid=QColor("#3a3b3f"), good=QColor("#4cc38a"), bad=QColor("#ff6b6b"),
    curve=(QColor("#5b9bff"), QColor("#ffa94d"), QColor("#4cc38a"), QColor("#f783ac"), QColor("#b197fc")),
)


class _ThemeState(QObject):
    changed = Signal(bool)  # True when the dark theme is active

    def __init__(self) -> None:
        super().__init__()
        self.choice = "auto"
        self.dark = False


_state: _ThemeState | None = None


def _theme_state() -> _ThemeState:
    global _state  # one per process, like QApplication itself
    if _state is None:
        _state = _ThemeState()
    return _state


def theme_changed() -> SignalInstance:
    """The signal emitted (with ``dark: bool``) whenever the palette changes."""
    return _theme_state().changed


def system_prefers_dark() -> bool:
    """True when the desktop asks for a dark colour scheme."""
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    if scheme is not None:
        value = scheme()
        if value == Qt.ColorScheme.Dark:
            return True
        if value == Qt.ColorScheme.Light:
            return False
    # Older Qt or an undecided platform: judge by the default window colour.
    return QApplication.style().standardPalette().color(QPalette.ColorRole.Window).lightness() < 128


def is_dark() -> bool:
    return _theme_state().dark


def colors() -> Colors:
    """The colour set of the active theme."""
    return DARK if is_dark() else LIGHT


def _palette(c: Colors, dark: bool) -> QPalette:
    p = QPalette()
    role = QPalette.ColorRole
    p.setColor(role.Window, c.window)
    p.setColor(role.WindowText, c.text)
    p.setColor(role.Base, c.base)
    p.setColor(role.AlternateBase, c.window.darker(104) if not dark else c.window.lighter(112))
    p.setColor(role.ToolTipBase, c.base)
    p.setColor(role.ToolTipText, c.text)
    p.setColor(role.PlaceholderText, c.muted)
    p.setColor(role.Text, c.text)
    p.setColor(role.Button, c.window.lighter(103) if not dark else c.window.lighter(125))
    p.setColor(role.ButtonText, c.text)
    p.setColor(role.BrightText, c.bad)
    p.setColor(role.Highlight, c.accent)
    p.setColor(role.HighlightedText, QColor("#ffffff"))
    p.setColor(role.Link, c.accent)
    p.setColor(role.Mid, c.grid)
    for group_role in (role.Text, role.WindowText, role.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, group_role, c.muted)
    return p


def apply_theme(app: QApplication, choice: str = "auto") -> bool:
    """Style ``app`` as light, dark, or following the system (``auto``); returns dark."""
    if choice not in THEME_CHOICES:
        choice = "auto"
    state = _theme_state()
    state.choice = choice
    app.setStyle("Fusion")
    dark = system_prefers_dark() if choice == "auto" else choice == "dark"
    state.dark = dark
    app.setPalette(_palette(DARK if dark else LIGHT, dark))
    state.changed.emit(dark)
    return dark


def follow_system(app: QApplication) -> None:
    """Re-apply the ``auto`` theme when the desktop switches colour scheme."""
    hints = QGuiApplication.styleHints()
    signal = getattr(hints, "colorSchemeChanged", None)
    if signal is not None:
        signal.connect(lambda *_: _theme_state().choice == "auto" and apply_theme(app, "auto"))
