"""The first screen, in place of the empty canvas: start a project, open one, or try the demo."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import theme
from app.icons import icon

PATH_ROLE = Qt.ItemDataRole.UserRole + 1


class StartPage(QWidget):
    newRequested = Signal()
    openRequested = Signal()
    demoRequested = Signal()
    recentRequested = Signal(object)  # Path
    reopenLastChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("startPage")
        title = QLabel("AnoGen Studio")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 2.0)
        font.setBold(True)
        title.setFont(font)
        intro = QLabel("Paint a few real defects, generate many more on good images, and train a detector "
                       "that finds them. Everything is kept in one project folder.")
        intro.setWordWrap(True)
        intro.setStyleSheet(f"color: {theme.colors().muted.name()};")

        self.new_button = QPushButton(icon("new"), "New project…")
        self.open_button = QPushButton(icon("open"), "Open project…")
        self.demo_button = QPushButton(icon("demo"), "Open the demo project")
        self.demo_button.setToolTip("A fabric dataset with three defect kinds, masked, and the small demo "
                                    "model: try every step in minutes on a laptop CPU")
        buttons = QVBoxLayout()
        for button, tip in ((self.new_button, "Ctrl+N"), (self.open_button, "Ctrl+O"),
                            (self.demo_button, "Ctrl+Shift+D")):
            button.setMinimumHeight(38)
            button.setToolTip((button.toolTip() + " " if button.toolTip() else "") + f"({tip})")
            buttons.addWidget(button)
        self.demo_note = QLabel("")
        self.demo_note.setWordWrap(True)
        self.demo_note.setStyleSheet(f"color: {theme.colors().muted.name()};")
        buttons.addWidget(self.demo_note)
        buttons.addStretch(1)

        recent_title = QLabel("Recent projects")
        recent_font = recent_title.font()
        recent_font.setBold(True)
        recent_title.setFont(recent_font)
        self.recent_list = QListWidget()
        self.recent_list.setObjectName("recentProjects")
        self.recent_list.setMinimumWidth(320)
        # A long path is elided in the middle (the tooltip has it whole): a horizontal
        # scroll bar would eat the height sized for the rows and cut the second line.
        self.recent_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.recent_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.recent_empty = QLabel("None yet: projects you open are listed here.")
        self.recent_empty.setStyleSheet(f"color: {theme.colors().muted.name()};")
        self.reopen_check = QCheckBox("Reopen the last project when AnoGen Studio starts")
        recent = QVBoxLayout()
        recent.addWidget(recent_title)
        recent.addWidget(self.recent_list)
        recent.addWidget(self.recent_empty)
        recent.addWidget(self.reopen_check)
        recent.addStretch(1)

        columns = QHBoxLayout()
        columns.addLayout(buttons, 1)
        columns.addSpacing(24)
        columns.addLayout(recent, 2)
        body = QVBoxLayout()
        body.addWidget(title)
        body.addWidget(intro)
        body.addSpacing(16)
        body.addLayout(columns, 1)
        frame = QWidget()
        frame.setLayout(body)
        frame.setMaximumWidth(860)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(32, 32, 32, 32)
        outer.addStretch(1)
        outer.addWidget(frame, 8)
        outer.addStretch(1)

        self.new_button.clicked.connect(self.newRequested)
        self.open_button.clicked.connect(self.openRequested)
        self.demo_button.clicked.connect(self.demoRequested)
        self.recent_list.itemActivated.connect(self._open_item)
        self.recent_list.itemClicked.connect(self._open_item)
        self.reopen_check.toggled.connect(self.reopenLastChanged)

    def set_recent(self, folders: Sequence[Path]) -> None:
        self.recent_list.clear()
        for folder in folders:
            item = QListWidgetItem(icon("recent"), f"{Path(folder).name}\n{folder}")
            item.setData(PATH_ROLE, Path(folder))
            item.setToolTip(str(folder))
            self.recent_list.addItem(item)
        self.recent_list.setVisible(bool(folders))
        if folders:  # as tall as its rows: an empty white box reads as "nothing here"
            rows = sum(self.recent_list.sizeHintForRow(i) for i in range(self.recent_list.count()))
            self.recent_list.setFixedHeight(rows + 2 * self.recent_list.frameWidth() + 4)
        self.recent_empty.setVisible(not folders)

    def set_reopen_last(self, on: bool) -> None:
        self.reopen_check.blockSignals(True)
        self.reopen_check.setChecked(on)
        self.reopen_check.blockSignals(False)

    def set_demo_building(self, building: bool) -> None:
        self.demo_button.setEnabled(not building)
        self.demo_note.setText("Building the demo project (first time only; progress below)…" if building else "")

    def _open_item(self, item: QListWidgetItem) -> None:
        path = item.data(PATH_ROLE)
        if path is not None:
            self.recentRequested.emit(Path(path))
