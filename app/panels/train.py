"""Stage 3: one-button detector training, live curves, metrics, heat maps, export."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from anogen.data.imageio import read_image
from anogen.detection.history import read_history, training_curves
from anogen.detection.options import EXPORT_FORMAT_NAMES, EXPORT_FORMATS
from anogen.detection.registry import DETECTORS, PRESETS
from anogen.detection.train_config import TRAIN_RANGES, TrainConfig
from anogen.errors import AnoGenError
from app.canvas_controller import CanvasController
from app.engine import Job
from app.icons import icon
from app.panels.base import Panel
from app.results_record import VIEW_KEY, from_record, results_caption, to_record, validation_caption
from app.studio import Studio
from app.tasks import AUTO_PRESET, ExportTask, TestResults, TestTask, run_export, run_test, run_train
from app.train_timing import (
    PRESET_STEPS,
    StepTiming,
    describe_duration,
    steps_within,
    table_seconds_per_step,
    time_training_steps,
)
from app.widgets.collapsible import Collapsible
from app.widgets.gallery import Gallery
from app.widgets.plot import PlotWidget

METRIC_ROWS = (("image_auroc", "Image AUROC"), ("image_ap", "Image AP"), ("pixel_auroc", "Pixel AUROC"),
               ("pixel_ap", "Pixel AP"), ("pixel_aupro", "Pixel AUPRO"), ("f1_max", "Image F1-max"))
GALLERY_LIMIT = 200
LENGTH_CHOICES = ("the preset's steps", "within 5 minutes on this CPU")


log = logging.getLogger(__name__)


def gpu_available() -> bool | None:
    """Whether a CUDA GPU is there; None while torch is not imported yet (it takes seconds,
    so the UI thread never imports it: the status bar's device check does, on a thread)."""
    import sys

    torch = sys.modules.get("torch")
    try:
        return None if torch is None else bool(torch.cuda.is_available())
    except (AttributeError, RuntimeError):  # still being imported by another thread
        return None


class TrainPanel(Panel):
    name = "train"
    title = "Train"

    def __init__(self, studio: Studio, controller: CanvasController, parent: QWidget | None = None) -> None:
        super().__init__(studio, controller, parent)
        self._train_job: Job | None = None
        self._test_job: Job | None = None
        self._export_job: Job | None = None
        self._train_after_timing = False  # Train pressed under the 5-minute length before timing
        self.results: TestResults | None = None
        self._ordered: list[int] = []
        self._thumbs: dict[int, np.ndarray] = {}
        self._results_for: str | None = None  # the detector self.results belong to
        self._tested_at = ""

        self.heading("Data")
        row = QHBoxLayout()
        self.dataset_label = QLabel()
        self.dataset_label.setWordWrap(True)
        self.link_button = QPushButton(icon("open"), "Link dataset…")
        self.link_button.setToolTip("An MVTec AD category folder: train/good, test/<kind>, ground_truth/<kind>")
        row.addWidget(self.dataset_label, 1)
        row.addWidget(self.link_button)
        self.form.addLayout(row)
        grid = QFormLayout()
        self.set_combo = QComboBox()
        self.set_combo.setObjectName("trainSetCombo")
        grid.addRow("Generated set", self.set_combo)
        self.form.addLayout(grid)

        self.train_button = QPushButton(icon("train"), "Train detector")
        self.train_button.setObjectName("trainButton")
        self.train_button.setMinimumHeight(40)
        font = self.train_button.font()
        font.setBold(True)
        self.train_button.setFont(font)
        self.form.addWidget(self.train_button)
        self.preset_info = self.note()
        self.form.addWidget(self.preset_info)
        row = QHBoxLayout()
        self.length_combo = QComboBox()
        self.length_combo.setObjectName("trainLength")
        self.length_combo.addItems(list(LENGTH_CHOICES))
        self.length_combo.setToolTip("How long to train: the preset's number of steps, or as many steps as fit in "
                                     "5 minutes on this computer's CPU (from the measured time per step)")
        self.time_button = QPushButton(icon("recent"), "Time it")
        self.time_button.setToolTip("Run 4 training steps now (a few seconds) to measure this computer's speed")
        row.addWidget(QLabel("Length"))
        row.addWidget(self.length_combo, 1)
        row.addWidget(self.time_button)
        self.form.addLayout(row)
        self.time_label = self.note()
        self.time_label.setObjectName("trainTimeEstimate")
        self.form.addWidget(self.time_label)
        self._timings: dict[tuple, StepTiming] = {}
        self._timing_job: Job | None = None

        advanced = QWidget()
        adv = QFormLayout(advanced)
        adv.setContentsMargins(12, 0, 0, 0)
        self.detector_combo = QComboBox()
        self.detector_combo.addItems(list(DETECTORS))
        adv.addRow("Detector", self.detector_combo)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(["auto (quick on CPU, paper on GPU)", *PRESETS])
        self.preset_combo.setToolTip("quick: small networks at 128 px, minutes on a CPU; paper: the published "
                                     "setup, hours on a GPU")
        adv.addRow("Preset", self.preset_combo)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, TRAIN_RANGES["steps"].maximum)  # 0: TrainConfig.steps None
        self.steps_spin.setSpecialValueText("preset default")
        adv.addRow("Steps", self.steps_spin)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(0, 1024)
        self.size_spin.setSingleStep(32)
        self.size_spin.setSpecialValueText("preset default")
        self.size_spin.setToolTip("Detector input size in pixels (a multiple of 32); smaller trains faster")
        adv.addRow("Image size", self.size_spin)
        self.tau_spin = self.float_spin(TRAIN_RANGES["tau"], TrainConfig.tau, step=0.05)
        self.tau_spin.setToolTip("A generated box is bigger than its defect. Pixels in a box that the detector "
                                 "scores below tau are not taught as defect, so the good rim of the box does not "
                                 "teach false alarms. Higher: only the clearest pixels count "
                                 f"(paper: {TrainConfig.tau:g})")
        adv.addRow("Box trust (tau)", self.tau_spin)
        self.mix_spin = self.float_spin(TRAIN_RANGES["mix"], TrainConfig.mix, step=0.1)
        self.mix_spin.setToolTip("Share of defect examples taken from your generated samples; the rest are the "
                                 f"detector's own synthetic blotches. 0: synthetic only (paper: {TrainConfig.mix:g})")
        adv.addRow("Generated share (mix)", self.mix_spin)
        self.seed_spin = self.int_spin(TRAIN_RANGES["seed"], TrainConfig.seed)
        adv.addRow("Seed", self.seed_spin)
        self.device_combo = self.device_chooser()
        adv.addRow("Device", self.device_combo)
        self.name_combo = QComboBox()
        self.name_combo.setEditable(True)
        self.name_combo.setToolTip("Detector name in the project; training under an existing name replaces it")
        adv.addRow("Name", self.name_combo)
        self.form.addWidget(Collapsible("Advanced", advanced))

        self.heading("Training")
        self.loss_plot = PlotWidget("Training loss", x_label="step", log_y=True)
        self.loss_plot.setObjectName("trainLoss")
        self.form.addWidget(self.loss_plot)
        self.val_plot = PlotWidget("Validation", x_label="step", fixed_range=None)
        self.form.addWidget(self.val_plot)

        self.heading("Results")
        row = QHBoxLayout()
        self.result_combo = QComboBox()
        self.result_combo.setObjectName("detectorCombo")
        self.test_button = QPushButton(icon("heatmap"), "Test")
        self.test_button.setToolTip("Score the test images with this detector (Ctrl+Shift+E)")
        self.export_button = QPushButton(icon("export"), "Export…")
        self.export_button.setToolTip("Save the detector for deployment in the format beside it; asks where (Ctrl+E)")
        self.export_button.setObjectName("exportButton")
        self.export_format_combo = QComboBox()
        for name in EXPORT_FORMATS:
            self.export_format_combo.addItem(EXPORT_FORMAT_NAMES[name], name)
        self.export_format_combo.setToolTip("ONNX: one file for onnxruntime and most inference servers. "
                                            "OpenVINO IR: a folder (model.xml, model.bin) for Intel CPUs and GPUs")
        row.addWidget(self.result_combo, 1)
        row.addWidget(self.test_button)
        self.form.addLayout(row)
        row = QHBoxLayout()  # a row of its own: beside Test it widened the panel past the dock
        row.addWidget(QLabel("Export as"))
        row.addWidget(self.export_format_combo, 1)
        row.addWidget(self.export_button)
        self.form.addLayout(row)
        self.metrics_caption = self.note()
        self.metrics_caption.setObjectName("metricsCaption")
        self.form.addWidget(self.metrics_caption)
        self.metrics_table = QTableWidget(len(METRIC_ROWS), 2)
        self.metrics_table.setObjectName("metricsTable")
        self.metrics_table.setHorizontalHeaderLabels(["Metric", "Value"])
        self.metrics_table.verticalHeader().setVisible(False)
        self.metrics_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.metrics_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for r, (_key, label) in enumerate(METRIC_ROWS):
            self.metrics_table.setItem(r, 0, QTableWidgetItem(label))
            self.metrics_table.setItem(r, 1, QTableWidgetItem("–"))
        self.metrics_table.setFixedHeight(self.metrics_table.horizontalHeader().height()
                                          + 24 * len(METRIC_ROWS) + 4)
        for r in range(len(METRIC_ROWS)):
            self.metrics_table.setRowHeight(r, 24)
        self.form.addWidget(self.metrics_table)
        row = QHBoxLayout()
        self.roc_plot = PlotWidget("ROC", x_label="FPR", fixed_range=(0, 1, 0, 1), diagonal=True)
        self.pr_plot = PlotWidget("PR", x_label="recall", fixed_range=(0, 1, 0, 1))
        self.roc_plot.setObjectName("rocPlot")
        self.pr_plot.setObjectName("prPlot")
        row.addWidget(self.roc_plot)
        row.addWidget(self.pr_plot)
        self.form.addLayout(row)

        # Verdicts and heat maps live in a pane of their own, which the main window shows under
        # the canvas where the thumbnails have room (the long scrolling panel squeezed them).
        self.results_pane = QWidget()
        self.results_pane.setObjectName("testImagesPane")
        pane = QVBoxLayout(self.results_pane)
        pane.setContentsMargins(6, 4, 6, 4)
        grid = QFormLayout()
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setObjectName("thresholdSlider")
        self.threshold_slider.setRange(0, 1000)
        self.threshold_slider.setValue(500)
        grid.addRow("Threshold", self.threshold_slider)
        self.counts_label = QLabel("–")
        self.counts_label.setObjectName("passFailCounts")
        self.counts_label.setWordWrap(True)
        grid.addRow("", self.counts_label)
        self.heat_opacity = QSlider(Qt.Orientation.Horizontal)
        self.heat_opacity.setRange(0, 100)
        self.heat_opacity.setValue(50)
        grid.addRow("Heat-map opacity", self.heat_opacity)
        pane.addLayout(grid)
        # Above the gallery: when the pane is short, the thumbnails scroll and the note stays readable.
        self.result_notes = self.note(fitted=True)
        pane.addWidget(self.result_notes)
        self.gallery = Gallery(side=110)
        self.gallery.setObjectName("heatmapGallery")
        self.gallery.setToolTip("Test images, most anomalous first; click one to see its heat map on the canvas, "
                                "with the true defect outlined in green")
        pane.addWidget(self.gallery, 1)
        self.form.addWidget(self.note("Test images and their heat maps are shown under the canvas."))
        self.form.addStretch(1)
        self._gt_masks: dict[Path, Path | None] = {}  # test image -> its ground-truth mask

        for key, widget in (("detector", self.detector_combo), ("preset", self.preset_combo),
                            ("steps", self.steps_spin), ("image_size", self.size_spin), ("tau", self.tau_spin),
                            ("mix", self.mix_spin), ("seed", self.seed_spin), ("device", self.device_combo),
                            ("time_limit", self.length_combo), ("export_format", self.export_format_combo)):
            self.persist(key, widget)

        self.train_action = self.action("&Train detector", "Ctrl+T", self.train, "train")
        self.test_action = self.action("T&est detector on the test images", "Ctrl+Shift+E", self.test, "heatmap")
        self.export_action = self.action("E&xport detector…", "Ctrl+E", self.export, "export")

        self.link_button.clicked.connect(self.link_dataset_dialog)
        self.train_button.clicked.connect(self.train)
        self.time_button.clicked.connect(lambda: self.time_steps())
        for widget in (self.detector_combo, self.preset_combo, self.length_combo, self.device_combo):
            widget.currentIndexChanged.connect(lambda _i: self._update_time_estimate())
        for spin in (self.steps_spin, self.size_spin):
            spin.valueChanged.connect(lambda _v: self._update_time_estimate())
        # Steps and the 5-minute length both set the run's length: the one chosen last wins,
        # and the other shows that it no longer applies (a typed Steps was silently ignored).
        self.steps_spin.valueChanged.connect(self._steps_chosen)
        self.length_combo.currentIndexChanged.connect(self._length_chosen)
        self.test_button.clicked.connect(self.test)
        self.export_button.clicked.connect(lambda: self.export())
        self.result_combo.currentTextChanged.connect(lambda _t: self._detector_changed())
        self.threshold_slider.valueChanged.connect(lambda _v: self._threshold_changed())
        self.heat_opacity.valueChanged.connect(lambda v: self.canvas.set_heatmap_opacity(v / 100))
        self.gallery.itemSelectedKey.connect(self._show_test_image)
        self.compact(self.set_combo, self.result_combo, self.name_combo, self.preset_combo)
        studio.projectEdited.connect(self._project_edited)
        studio.engine.jobProgress.connect(self._job_progress)
        self.project_changed()

    # ================================================================== state
    def dataset_dir(self) -> Path | None:
        """The first linked dataset folder in MVTec AD layout (it has train/good)."""
        workspace = self.studio.workspace
        if workspace is None:
            return None
        for folder in workspace.linked_dataset_folders():
            if (folder / "train" / "good").is_dir():
                return folder
        return None

    def project_changed(self) -> None:
        self.restore_settings()
        self._gt_masks = {}
        self._clear_results()
        self._fill()  # draws the shown detector's curves
        self.update_enabled()

    def _project_edited(self, area: str) -> None:
        if area in ("generated", "generated_status", "detectors", "datasets"):
            self._fill()
        self.update_enabled()

    def _fill(self) -> None:
        project = self.studio.project
        data = self.dataset_dir()
        self.dataset_label.setText(f"Dataset: {data.parent.name}/{data.name}" if data else
                                   "No dataset in MVTec AD layout linked: link one to train and test.")
        self.dataset_label.setToolTip(str(data) if data else "")
        current = self.set_combo.currentData()
        self.set_combo.blockSignals(True)
        self.set_combo.clear()
        self.set_combo.addItem("none (synthetic anomalies only)", None)
        if project is not None:
            for generated in project.generated_sets:
                counts = {s: sum(1 for x in generated.samples if x.status == s) for s in ("accepted", "pending")}
                self.set_combo.addItem(f"{generated.name} ({counts['accepted']} accepted, {counts['pending']} to "
                                       "review)", generated.name)
            index = self.set_combo.findData(current) if current else self.set_combo.count() - 1
            self.set_combo.setCurrentIndex(max(0, index))
        self.set_combo.blockSignals(False)
        names = [d.name for d in project.detectors] if project is not None else []
        selected = self.result_combo.currentText()
        self.result_combo.blockSignals(True)
        self.result_combo.clear()
        self.result_combo.addItems(names)
        if selected in names:
            self.result_combo.setCurrentText(selected)
        elif names:
            self.result_combo.setCurrentIndex(len(names) - 1)
        self.result_combo.blockSignals(False)
        self.name_combo.clear()
        self.name_combo.addItems(names)
        self.name_combo.setEditText("")
        self._update_preset_info()
        if self._results_for != self.result_combo.currentText():
            self._clear_results()
            self._restore_results()
            self._restore_curves()
        self._refresh_metrics()

    def _detector_entry(self):
        project = self.studio.project
        name = self.result_combo.currentText()
        if project is None or not name:
            return None
        return next((d for d in project.detectors if d.name == name), None)

    def _preset(self) -> str:
        """The preset to train with; AUTO_PRESET is resolved by the job (paper on a GPU, else quick)."""
        if self.preset_combo.currentIndex() == 0:
            return AUTO_PRESET
        return self.preset_combo.currentText()

    def _update_preset_info(self) -> None:
        preset = self._preset()
        if preset == AUTO_PRESET:
            gpu = gpu_available()
            preset = "quick on CPU, paper on GPU" if gpu is None else ("paper (GPU)" if gpu else "quick (CPU)")
        self.preset_info.setText(f"{self.detector_combo.currentText().upper()}, preset {preset}, "
                                 f"box trust (tau) {self.tau_spin.value():g}, generated share (mix) "
                                 f"{self.mix_spin.value():g}. Change them under Advanced.")
        self._update_time_estimate()

    # ------------------------------------------------------------------ expected time
    def _timing_key(self) -> tuple:
        return (self.detector_combo.currentText(), self._resolved_preset(), self.size_spin.value(),
                self.device_combo.currentText())

    def _resolved_preset(self) -> str:
        preset = self._preset()
        return ("paper" if gpu_available() else "quick") if preset == AUTO_PRESET else preset

    def step_timing(self) -> StepTiming | None:
        """Seconds per step (measured here when "Time it" ran, else from the table) and run length."""
        detector, preset, size, _device = self._timing_key()
        measured = self._timings.get(self._timing_key())
        if measured is not None:
            return measured
        per_step = table_seconds_per_step(detector, preset, size)
        if per_step is None:
            return None
        return StepTiming(per_step, PRESET_STEPS.get((detector, preset), 0), False)

    def train_steps(self) -> int | None:
        """The steps Train will run: within 5 minutes when that length is chosen, else the
        Steps field, else None (the preset's)."""
        timing = self.step_timing()
        if self.length_combo.currentIndex() == 1 and timing is not None:
            return steps_within(timing.seconds_per_step)
        return self.steps_spin.value() or None

    def _steps_chosen(self, value: int) -> None:
        if value and self.length_combo.currentIndex() == 1:
            self.length_combo.setCurrentIndex(0)

    def _length_chosen(self, index: int) -> None:
        if index == 1 and self.steps_spin.value():
            self.steps_spin.setValue(0)  # "preset default": the 5-minute length decides
        if index == 1 and not self._restoring and not self._measured_here():
            # The table is another computer's (this project's 2-core machine ran DRAEM quick
            # 4x slower than it says): "within 5 minutes" must rest on this one's speed.
            self.time_steps()

    def _measured_here(self) -> bool:
        return self._timing_key() in self._timings

    def _update_time_estimate(self) -> None:
        if not hasattr(self, "time_label"):
            return  # still building the panel
        timing = self.step_timing()
        if gpu_available():
            self.time_label.setText("On the GPU: minutes for quick, about an hour for paper.")
            return
        if timing is None:
            self.time_label.setText("Expected time unknown for these settings: press Time it.")
            return
        steps = self.train_steps() or timing.total_steps
        source = ("measured here" if timing.measured else
                  "from a 2-core laptop CPU; press Time it to measure this computer")
        if not steps:
            self.time_label.setText(f"About {timing.seconds_per_step:.2f} s per step ({source}); the run length "
                                    "depends on the dataset: choose Steps or the 5-minute length.")
            return
        self.time_label.setText(f"Expected training time: about {describe_duration(steps * timing.seconds_per_step)}"
                                f" ({steps} steps × {timing.seconds_per_step:.2f} s, {source}), then the Test.")

    def time_steps(self) -> Job | None:
        """Measure this computer's seconds per training step with the chosen settings."""
        workspace = self.studio.workspace
        data = self.dataset_dir()
        if workspace is None or data is None or self.is_running(self._timing_job):
            return None
        config = self._train_config(workspace, data, Path(workspace.root) / "unused")
        key = self._timing_key()

        def measured(timing: StepTiming) -> None:
            self._timings[key] = timing
            self._update_time_estimate()
            if self._train_after_timing:
                self._train_after_timing = False
                self.train()

        def failed(_message: str) -> None:
            self._train_after_timing = False

        self.time_label.setText("Timing a few training steps…")
        self._timing_job = self.studio.engine.submit(
            "Time training steps", lambda job_config, progress, cancel: time_training_steps(
                run_train, job_config, progress, cancel), config,
            on_result=measured, on_failure=failed)
        return self._timing_job

    def update_enabled(self) -> None:
        training = self.is_running(self._train_job)
        ready = self.studio.project is not None and self.dataset_dir() is not None
        self.train_button.setEnabled(ready and not training)
        self.train_action.setEnabled(ready and not training)
        self.train_button.setText("Training…" if training else "Train detector")
        has_detector = self._detector_entry() is not None
        self.test_button.setEnabled(has_detector and ready and not self.is_running(self._test_job))
        self.test_action.setEnabled(self.test_button.isEnabled())
        self.export_button.setEnabled(has_detector and not self.is_running(self._export_job))
        self.export_action.setEnabled(self.export_button.isEnabled())
        self.link_button.setEnabled(self.studio.project is not None)

    def link_dataset_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder (MVTec AD category)",
                                                  self.studio.settings.last_folder)
        if folder:
            self.link_dataset(Path(folder))

    def link_dataset(self, folder: Path) -> bool:
        try:
            self.studio.open_workspace.link_dataset(folder)
        except AnoGenError as exc:
            QMessageBox.warning(self, "Cannot link dataset", str(exc))
            return False
        self.studio.edited("datasets")
        self.studio.projectEdited.emit("good")
        return True

    # ================================================================== training
    def _support_images(self) -> list[Path]:
        project = self.studio.project
        return [self.studio.resolve(s.image) for k in project.defect_kinds for s in k.support] if project else []

    def train(self) -> Job | None:
        """Train a detector with the chosen settings, then test it on the test images."""
        workspace = self.studio.workspace
        data = self.dataset_dir()
        if workspace is None or data is None or self.is_running(self._train_job):
            return None
        if self.length_combo.currentIndex() == 1 and not self._measured_here():
            # Start once this computer's speed is known, so the run fits the 5 minutes.
            if self.is_running(self._timing_job) or self.time_steps() is not None:
                self._train_after_timing = True
                self.time_label.setText("Timing a few training steps; training starts right after…")
            return None
        set_name = self.set_combo.currentData()
        if set_name and self.studio.review_required():
            pending = sum(1 for s in workspace.project.generated_set(set_name).samples if s.status == "pending")
            if pending:
                QMessageBox.information(
                    self, "Review the samples first",
                    f"{pending} sample(s) of '{set_name}' are still to review, and this project trains on accepted "
                    "samples only. Accept (A) or reject (X) them under the canvas in the Generate panel, or set "
                    "\"Unreviewed samples are\" to \"used for training unless rejected\" there.")
                return None
        detector = self.detector_combo.currentText()
        name = self.name_combo.currentText().strip() or f"{detector}-{time.strftime('%Y%m%d-%H%M%S')}"
        folder_rel = f"detectors/{''.join(c if c.isalnum() or c in '-_.' else '_' for c in name).lower()}"
        config = self._train_config(workspace, data, workspace.resolve(folder_rel))
        self.loss_plot.clear()
        self.val_plot.clear()
        self._update_preset_info()

        def store(result) -> None:  # result: anogen.detection.train.TrainResult
            metrics = {k: float(v) for k, v in result.best_metrics.items()
                       if isinstance(v, (int, float)) and math.isfinite(float(v))}
            workspace.add_detector(name, folder_rel, result.kind, metrics)
            records = self._stored_records()
            if records.pop(name, None) is not None:  # the Test of the detector this one replaces
                self.studio.update_view(**{VIEW_KEY: records})
            self.studio.edited("detectors")
            self.result_combo.setCurrentText(name)
            self.test()

        self._train_job = self.studio.engine.submit(f"Train {detector} '{name}'", run_train, config, on_result=store)
        self.update_enabled()
        return self._train_job

    def _train_config(self, workspace, data: Path, out_dir: Path) -> TrainConfig:  # workspace: Workspace
        """The training settings from the panel (preset may be AUTO_PRESET, resolved by the job)."""
        set_name = self.set_combo.currentData()
        generated_dir = workspace.resolve(workspace.project.generated_set(set_name).folder) if set_name else None
        return TrainConfig(data_dir=data, detector=self.detector_combo.currentText(), out_dir=out_dir,
                           generated_dir=generated_dir, preset=self._preset(),
                           overrides={"image_size": self.size_spin.value()} if self.size_spin.value() else {},
                           steps=self.train_steps(), tau=self.tau_spin.value(),
                           mix=self.mix_spin.value(), seed=self.seed_spin.value(),
                           device=self.device_combo.currentText(), exclude=self._support_images(),
                           overwrite=True)

    def _job_progress(self, job: Job, report) -> None:
        if job is not self._train_job:
            return
        for key, value in report.metrics.items():
            if not math.isfinite(value):
                continue
            if key.startswith("val_"):
                self.val_plot.add_point(key[4:], report.step, value)
            elif key == "loss":
                self.loss_plot.add_point("loss", report.step, value)

    # ================================================================== results
    def _clear_results(self) -> None:
        self.results = None
        self._results_for = None
        self._tested_at = ""
        self.gallery.clear()
        self.roc_plot.clear()
        self.pr_plot.clear()
        self.counts_label.setText("–")
        self.result_notes.setText("")

    def _detector_changed(self) -> None:
        self._clear_results()
        self._restore_results()
        self._restore_curves()
        self._refresh_metrics()
        self.update_enabled()

    def _restore_curves(self) -> None:
        """Draw the shown detector's training and validation curves from the history its
        training wrote (a running training draws its own, live)."""
        if self.is_running(self._train_job):
            return
        self.loss_plot.clear()
        self.val_plot.clear()
        entry = self._detector_entry()
        if entry is None:
            return
        try:
            curves = training_curves(read_history(self.studio.resolve(entry.folder)))
        except (OSError, ValueError, AnoGenError) as error:  # unreadable: no curves, the rest still works
            log.warning("no training curves for '%s': %s", entry.name, error)
            return
        if curves.loss.steps:
            self.loss_plot.set_series("loss", curves.loss.steps, curves.loss.values)
        for name, curve in curves.validation.items():
            self.val_plot.set_series(name, curve.steps, curve.values)

    def _refresh_metrics(self) -> None:
        """The table shows the last Test of this detector when there is one, else the validation
        score training recorded; the caption says which, on how many images."""
        entry = self._detector_entry()
        if self.results is not None:
            self._show_metrics(self.results.metrics, results_caption(self.results.metrics, self._tested_at))
        elif entry is not None:
            self._show_metrics(entry.metrics, validation_caption(entry.metrics))
        else:
            self._show_metrics({}, "")

    def _show_metrics(self, metrics: dict, caption: str = "") -> None:
        self.metrics_caption.setText(caption)
        self.metrics_caption.setVisible(bool(caption))
        for r, (key, _label) in enumerate(METRIC_ROWS):
            value = metrics.get(key)
            text = f"{float(value):.3f}" if isinstance(value, (int, float)) and math.isfinite(float(value)) else "–"
            item = self.metrics_table.item(r, 1)
            if item is not None:
                item.setText(text)

    def test(self) -> Job | None:
        entry = self._detector_entry()
        data = self.dataset_dir()
        if entry is None or data is None:
            return None
        task = TestTask(data, self.studio.resolve(entry.folder), exclude=self._support_images(),
                        device=self.device_combo.currentText())
        self.result_notes.setText("Scoring the test images…")
        name = entry.name
        self._test_job = self.studio.engine.submit(f"Test '{name}'", run_test, task,
                                                   on_result=lambda results: self._tested(name, results))
        self.update_enabled()
        return self._test_job

    def _tested(self, detector: str, results: TestResults) -> None:
        if self.result_combo.currentText() != detector:
            self.result_combo.setCurrentText(detector)
        self.show_results(results)

    def show_results(self, results: TestResults, *, tested_at: str = "", store: bool = True) -> None:
        """Show Test results of the current detector; fresh ones are stored in the project."""
        self.results = results
        self._results_for = self.result_combo.currentText()
        self._tested_at = tested_at or time.strftime("%Y-%m-%d %H:%M")
        self._refresh_metrics()
        self.roc_plot.clear()
        self.pr_plot.clear()
        if results.roc is not None:
            self.roc_plot.set_series("ROC", *results.roc)
        if results.pr is not None:
            self.pr_plot.set_series("PR", *results.pr)
        self._ordered = sorted(range(len(results.images)), key=lambda i: -results.images[i].normalised)
        self._thumbs = {}
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(round(results.threshold * 1000))
        self.threshold_slider.blockSignals(False)
        self._fill_gallery()
        self._threshold_changed()
        n = results.metrics.get("n_images", len(results.images))
        stored = "" if store else " Heat maps are not kept with the project: press Test to compute them again."
        self.result_notes.setText(f"{n} test images scored, most anomalous first. "
                                  + " ".join(note.rstrip(".") + "." for note in results.notes) + stored)
        if store:
            self._store_results()

    # ------------------------------------------------------------------ kept in the project
    def _stored_records(self) -> dict:
        records = self.studio.view_state().get(VIEW_KEY)
        return dict(records) if isinstance(records, dict) else {}

    def _store_results(self) -> None:
        workspace = self.studio.workspace
        if workspace is None or self.results is None or not self._results_for:
            return

        def relative(path: Path) -> str:
            try:
                return workspace.relative(path)
            except AnoGenError:  # outside the project and its datasets: kept as it is
                return str(path)

        data = self.dataset_dir()
        record = to_record(self.results, relative, relative(data) if data is not None else "")
        record["tested_at"] = self._tested_at
        records = self._stored_records()
        records[self._results_for] = record
        self.studio.update_view(**{VIEW_KEY: records})
        self.studio.save()  # a Test takes minutes: keep it even if the app is killed next
        self.studio.projectEdited.emit(VIEW_KEY)  # the project tree names the test score

    def _store_threshold(self) -> None:
        records = self._stored_records()
        record = records.get(self._results_for or "")
        if self.results is None or not isinstance(record, dict) or record.get("threshold") == self.threshold():
            return
        records[self._results_for] = dict(record, threshold=self.threshold())
        self.studio.update_view(**{VIEW_KEY: records})  # saved shortly after, in one write

    def _restore_results(self) -> None:
        """Show the stored last Test of the current detector (no heat maps), if any."""
        name = self.result_combo.currentText()
        workspace = self.studio.workspace
        record = self._stored_records().get(name) if name and workspace is not None else None
        if record is None or workspace is None:
            return

        def resolve(rel: str) -> Path:
            try:
                return workspace.resolve(rel)
            except AnoGenError:
                return Path(rel)

        results = from_record(record, resolve)
        if results is not None:
            self.show_results(results, tested_at=str(record.get("tested_at", "")), store=False)

    def threshold(self) -> float:
        return self.threshold_slider.value() / 1000

    def _fill_gallery(self) -> None:
        self.gallery.clear()
        if self.results is None:
            return
        threshold = self.threshold()
        for i in self._ordered[:GALLERY_LIMIT]:
            item = self.results.images[i]
            thumb = self._thumb(i)
            verdict = "fail" if item.normalised >= threshold else "pass"
            truth = "good" if item.label == 0 else item.defect_kind
            self.gallery.add(i, thumb, f"{item.normalised:.2f} {truth}", verdict)

    def _thumb(self, index: int) -> np.ndarray:
        """The test image blended with its heat map (the library's overlay), cached; the plain
        image for stored results, whose heat maps are not kept, or a grey tile when it is gone."""
        from anogen.detection.infer import heatmap_overlay

        if index not in self._thumbs:
            assert self.results is not None  # thumbnails exist only for shown results
            item = self.results.images[index]
            try:
                image = read_image(item.path)
            except AnoGenError:
                image = np.full((64, 64, 3), 128, np.uint8)
                self._thumbs[index] = image
                return image
            self._thumbs[index] = (image if item.anomaly_map is None
                                   else heatmap_overlay(image, item.anomaly_map, alpha=0.45))
        return self._thumbs[index]

    def pass_fail_counts(self) -> tuple[int, int]:
        if self.results is None:
            return (0, 0)
        threshold = self.threshold()
        failed = sum(1 for t in self.results.images if t.normalised >= threshold)
        return len(self.results.images) - failed, failed

    def _threshold_changed(self) -> None:
        if self.results is None:
            self.counts_label.setText("–")
            return
        passed, failed = self.pass_fail_counts()
        threshold = self.threshold()
        wrong_pass = sum(1 for t in self.results.images if t.normalised < threshold and t.label == 1)
        wrong_fail = sum(1 for t in self.results.images if t.normalised >= threshold and t.label == 0)
        self.counts_label.setText(f"{passed} pass · {failed} fail  (threshold {threshold:.3f}; "
                                  f"{wrong_pass} missed defects, {wrong_fail} false alarms; "
                                  f"on the {len(self.results.images)} test images scored)")
        self._store_threshold()
        for i in range(self.gallery.count()):
            item = self.gallery.item(i)
            index = item.data(Qt.ItemDataRole.UserRole + 1)
            test = self.results.images[index]
            verdict = "fail" if test.normalised >= threshold else "pass"
            truth = "good" if test.label == 0 else test.defect_kind
            self.gallery.set_status(item, self._thumb(index), f"{test.normalised:.2f} {truth}", verdict)
        self.canvas.set_heatmap_threshold(self._map_threshold())

    def _map_threshold(self) -> float:
        return 0.5

    def _show_test_image(self, index: int) -> None:
        if self.results is None:
            return
        item = self.results.images[int(index)]
        try:
            image = read_image(item.path)
        except AnoGenError as exc:
            self.result_notes.setText(str(exc))
            return
        self.controller.show_image(image, item.anomaly_map, threshold=self._map_threshold(),
                                   opacity=self.heat_opacity.value() / 100)
        self.canvas.set_outline(self._ground_truth(item.path, image.shape[:2]))

    def _ground_truth(self, path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
        """The true defect mask of a test image (None for a good one or when it is unknown)."""
        from anogen.data.datasets import read_mvtec_category
        from anogen.data.imageio import read_mask

        data = self.dataset_dir()
        if data is None:
            return None
        if not self._gt_masks:
            try:
                self._gt_masks = {Path(r.path).resolve(): (Path(r.mask_path) if r.mask_path else None)
                                  for r in read_mvtec_category(data).test}
            except AnoGenError:
                return None
        mask_path = self._gt_masks.get(Path(path).resolve())
        if mask_path is None:
            return None
        try:
            return read_mask(mask_path)
        except AnoGenError:
            return None

    def export(self, out: Path | None = None) -> Job | None:
        """Export the current detector in the chosen format, to ``out`` or where the user
        picks in a dialog (a file for ONNX, a new folder for OpenVINO IR)."""
        entry = self._detector_entry()
        if entry is None:
            return None
        folder = self.studio.resolve(entry.folder)
        fmt = self.export_format_combo.currentData()
        fmt_name = EXPORT_FORMAT_NAMES[fmt]
        if out is None:
            out = self._ask_export_path(entry.name, folder, fmt)
            if out is None:
                return None
            self.studio.settings.set_value("ui/export_folder", str(out.parent))

        def done(result) -> None:  # result: ExportResult
            self.result_notes.setText(f"Exported {result.path} (input {result.image_size} px; {fmt_name} matches "
                                      f"torch within {result.max_abs_diff_map:.1e}).")

        self._export_job = self.studio.engine.submit(f"Export '{entry.name}' to {fmt_name}", run_export,
                                                     ExportTask(folder, out, fmt), heavy=False, on_result=done)
        self.update_enabled()
        return self._export_job

    def _ask_export_path(self, name: str, folder: Path, fmt: str) -> Path | None:
        start = Path(self.studio.settings.value("ui/export_folder", str(folder)) or folder)
        if fmt == "onnx":
            chosen, _ = QFileDialog.getSaveFileName(self, f"Export '{name}' to ONNX", str(start / f"{name}.onnx"),
                                                    "ONNX model (*.onnx)")
            if not chosen:
                return None
            return Path(chosen) if chosen.lower().endswith(".onnx") else Path(chosen + ".onnx")
        # OpenVINO IR is a folder: the user names it; the job refuses one anogen did not write.
        chosen, _ = QFileDialog.getSaveFileName(self, f"Export '{name}' to OpenVINO IR: name the folder to create",
                                                str(start / f"{name}-openvino"), "OpenVINO IR folder (*)",
                                                options=QFileDialog.Option.DontConfirmOverwrite)
        return Path(chosen) if chosen else None

    def prepare_for_screenshot(self) -> None:
        if self.gallery.count():
            self.gallery.setCurrentRow(0)
            self._show_test_image(self.gallery.item(0).data(Qt.ItemDataRole.UserRole + 1))
