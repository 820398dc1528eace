"""Toolbar controls for how the canvas shows things: brightness and contrast (viewing
only), the mask overlay on or off, and its colour."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSizePolicy, QSlider, QToolButton, QWidget

from app.canvas import ImageCanvas
from app.icons import icon
from app.settings import Settings

# "theme" follows the light/dark theme's red; the others are for parts where red hides.
MASK_COLORS: dict[str, str] = {"theme red": "", "green": "#22dd44", "blue": "#2a7fff", "yellow": "#ffd400",
                               "magenta": "#ff33cc", "cyan": "#00e5ff", "white": "#ffffff"}


class ViewControls(QWidget):
    """Brightness/contrast sliders, a mask on/off box and a mask colour choice for one canvas."""

    def __init__(self, canvas: ImageCanvas, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = canvas
        self.settings = settings
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 0, 6, 0)
        layout.setSpacing(4)

        self.brightness = self._slider(-100, 100, 0, "Brightness of the view only: the image and what the models "
                                       "read do not change")
        self.contrast = self._slider(10, 300, 100, "Contrast of the view only: the image and what the models "
                                     "read do not change")
        label = QLabel()
        label.setPixmap(icon("contrast").pixmap(16, 16))
        label.setToolTip("Brightness and contrast, for viewing")
        layout.addWidget(label)
        layout.addWidget(QLabel("Brightness"))
        layout.addWidget(self.brightness)
        layout.addWidget(QLabel("Contrast"))
        layout.addWidget(self.contrast)
        self.reset_button = QToolButton()
        self.reset_button.setText("Reset")
        self.reset_button.setToolTip("Show the image as it is")
        layout.addWidget(self.reset_button)

        self.mask_check = QCheckBox("Mask")
        self.mask_check.setObjectName("maskVisible")
        self.mask_check.setChecked(True)
        self.mask_check.setToolTip("Show the mask over the image (M); hide it to look at the defect underneath")
        layout.addSpacing(8)
        layout.addWidget(self.mask_check)
        self.color_combo = QComboBox()
        self.color_combo.setObjectName("maskColor")
        self.color_combo.setToolTip("Mask colour: pick one that stands out on your parts (red hides on red ones)")
        for name, value in MASK_COLORS.items():
            self.color_combo.addItem(self._swatch(value), name, value)
        self.color_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        layout.addWidget(self.color_combo)
        # Its natural width, at the left of the toolbar's free space, not stretched across it.
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)

        self.brightness.valueChanged.connect(self._levels_changed)
        self.contrast.valueChanged.connect(self._levels_changed)
        self.reset_button.clicked.connect(self.reset_levels)
        self.mask_check.toggled.connect(canvas.set_mask_visible)
        self.color_combo.currentIndexChanged.connect(self._color_changed)
        saved = settings.mask_color
        index = self.color_combo.findData(saved)
        self.color_combo.setCurrentIndex(max(0, index))
        self._color_changed()

    def _slider(self, low: int, high: int, value: int, tip: str) -> QSlider:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(low, high)
        slider.setValue(value)
        slider.setFixedWidth(90)
        slider.setToolTip(tip)
        slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys stay with the canvas
        return slider

    def _swatch(self, value: str) -> QIcon:
        pixmap = QPixmap(14, 14)
        pixmap.fill(QColor(value) if value else QColor("#e5484d"))
        return QIcon(pixmap)

    def _levels_changed(self) -> None:
        self.canvas.set_display_levels(self.brightness.value(), self.contrast.value())

    def reset_levels(self) -> None:
        self.brightness.setValue(0)
        self.contrast.setValue(100)

    def _color_changed(self) -> None:
        value = self.color_combo.currentData() or ""
        self.canvas.set_mask_color(QColor(value) if value else None)
        self.settings.mask_color = value

    def toggle_mask(self) -> None:
        self.mask_check.setChecked(not self.mask_check.isChecked())
