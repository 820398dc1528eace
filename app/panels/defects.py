"""Stage 1: defect kinds, their support images and masks, the model, and Learn."""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)

from anogen.data.imageio import is_image_file, read_image
from anogen.diffusion.config import APP_LEARN_STEPS, LEARN_RANGES, LearnConfig
from anogen.diffusion.crop import CROP_CHOICES
from anogen.diffusion.embedding_file import read_loss_curve
from anogen.errors import AnoGenError
from app.canvas import Tool
from app.canvas_controller import CanvasController
from app.engine import Job
from app.icons import icon
from app.panels.base import Panel
from app.studio import MODEL_CHECKING, MODEL_FAILED, MODEL_OK, MODEL_UNCHECKED, Selection, Studio
from app.tasks import ImportResult, ImportTask, LearnTask, check_model, run_import, run_learn
from app.widgets.collapsible import Collapsible
from app.widgets.gallery import Gallery
from app.widgets.plot import PlotWidget

MIN_SHOTS = 3  # the paper's k; fewer works but learns worse
LARGE_SIDE = 4096  # above this an import asks first: a 6000x4000 photo froze the UI for 6 s
DOWNSCALED_SIDE = 2048  # still 4x the models' working size, so a small defect keeps its detail


class DefectsPanel(Panel):
    name = "defects"
    title = "Defects"

    def __init__(self, studio: Studio, controller: CanvasController, parent: QWidget | None = None) -> None:
        super().__init__(studio, controller, parent)
        self.setAcceptDrops(True)
        self._learn_job: Job | None = None
        self._learning_kind: str | None = None  # the kind self._learn_job learns
        self._check_job: Job | None = None
        self._import_job: Job | None = None
        self._import_problems: list[str] = []

        # -- defect kind
        self.heading("Defect kind")
        row = QHBoxLayout()
        self.kind_combo = QComboBox()
        self.kind_combo.setObjectName("kindCombo")
        self.kind_combo.setMinimumWidth(150)
        self.add_kind_button = QPushButton(icon("add"), "Add kind…")
        self.remove_kind_button = QToolButton()
        self.remove_kind_button.setIcon(icon("delete"))
        self.remove_kind_button.setToolTip("Remove this defect kind from the project")
        row.addWidget(self.kind_combo, 1)
        row.addWidget(self.add_kind_button)
        row.addWidget(self.remove_kind_button)
        self.form.addLayout(row)
        self.kind_info = self.note()
        self.form.addWidget(self.kind_info)

        # -- support images
        self.heading("Support images (real defects)")
        self.gallery = Gallery(side=72)
        self.gallery.setObjectName("supportGallery")
        self.gallery.setMaximumHeight(130)
        self.form.addWidget(self.gallery)
        row = QHBoxLayout()
        self.import_button = QPushButton(icon("import"), "Import images…")
        self.remove_support_button = QPushButton(icon("delete"), "Remove")
        row.addWidget(self.import_button)
        row.addWidget(self.remove_support_button)
        row.addStretch(1)
        self.form.addLayout(row)
        self.shots_warning = self.note(warning=True)
        self.shots_warning.setObjectName("shotsWarning")
        self.form.addWidget(self.shots_warning)
        self.form.addWidget(self.note("Drop image files here to import them. Paint over each defect on the canvas."))

        # -- mask tools
        self.heading("Mask")
        # Two rows of three: one row of six text buttons is wider than the dock.
        tools = QGridLayout()
        self.tool_buttons: dict[Tool, QToolButton] = {}
        for tool, text, key in ((Tool.BRUSH, "Brush", "B"), (Tool.ERASER, "Eraser", "E"), (Tool.FILL, "Fill", "G"),
                                (Tool.POLYGON, "Polygon", "P"), (Tool.PAN, "Pan", "H")):
            button = QToolButton()
            button.setIcon(icon(tool.value))
            button.setText(text)
            button.setToolTip(f"{text} ({key})")
            button.setCheckable(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.clicked.connect(lambda _c=False, t=tool: self.canvas.set_tool(t))
            self.tool_buttons[tool] = button
        self.clear_button = QToolButton()
        self.clear_button.setIcon(icon("clear"))
        self.clear_button.setText("Clear")
        self.clear_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.clear_button.setToolTip("Clear the mask (Ctrl+Shift+X)")
        self.clear_button.clicked.connect(self.canvas.clear_mask)
        for index, button in enumerate([*self.tool_buttons.values(), self.clear_button]):
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            tools.addWidget(button, index // 3, index % 3)
        self.form.addLayout(tools)
        grid = QFormLayout()
        self.radius_spin = QSpinBox()
        self.radius_spin.setRange(1, 500)
        self.radius_spin.setSuffix(" px")
        self.radius_spin.setValue(self.canvas.brush_radius())
        self.radius_spin.valueChanged.connect(self.canvas.set_brush_radius)
        self.canvas.brushRadiusChanged.connect(self.radius_spin.setValue)
        grid.addRow("Brush radius", self.radius_spin)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(round(self.canvas.mask_opacity() * 100))
        self.opacity_slider.valueChanged.connect(lambda v: self.canvas.set_mask_opacity(v / 100))
        grid.addRow("Mask opacity", self.opacity_slider)
        self.area_label = QLabel("–")
        self.area_label.setObjectName("maskArea")
        grid.addRow("Mask area", self.area_label)
        self.form.addLayout(grid)
        self.canvas.maskAreaChanged.connect(
            lambda n, pct: self.area_label.setText(
                f"{n:,} px  ({pct:.2f} %)" if self.canvas.mask() is not None else "–"))
        self.canvas.toolChanged.connect(self._tool_changed)

        # -- model
        self.heading("Diffusion model")
        row = QHBoxLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setObjectName("modelEdit")
        self.model_edit.setPlaceholderText("folder, Hugging Face id (cached) or .safetensors file")
        self.model_folder_button = QToolButton()
        self.model_folder_button.setIcon(icon("open"))
        self.model_folder_button.setToolTip("Choose a diffusers model folder")
        self.model_file_button = QToolButton()
        self.model_file_button.setIcon(icon("model"))
        self.model_file_button.setToolTip("Choose a single-file checkpoint (.safetensors)")
        self.demo_model_button = QToolButton()
        self.demo_model_button.setIcon(icon("demo"))
        self.demo_model_button.setToolTip("Use the small demo model that ships with AnoGen Studio (Ctrl+Shift+M)")
        row.addWidget(self.model_edit, 1)
        row.addWidget(self.model_folder_button)
        row.addWidget(self.model_file_button)
        row.addWidget(self.demo_model_button)
        self.form.addLayout(row)
        self.model_edit.installEventFilter(self)  # Esc goes back to the model in use
        self.model_status = self.note()
        self.model_status.setObjectName("modelStatus")
        self.form.addWidget(self.model_status)

        # -- learn settings
        self.heading("Learn (stage 1)")
        grid = QFormLayout()
        self.steps_spin = self.int_spin(LEARN_RANGES["steps"], APP_LEARN_STEPS)
        self.steps_spin.setToolTip("How long Learn practises on your photos: more steps learn the defect better and "
                                   f"take longer. The paper trains {LearnConfig.steps} on a GPU; a few hundred give a "
                                   "usable demo on a CPU")
        grid.addRow("Steps", self.steps_spin)
        self.lr_spin = self.float_spin(LEARN_RANGES["lr"], LearnConfig.lr, step=0.001, decimals=4)
        self.lr_spin.setToolTip("How big each learning step is: higher learns faster but can go unstable (the loss "
                                "curve jumps); lower is steadier and slower")
        grid.addRow("Learning rate", self.lr_spin)
        self.seed_spin = self.int_spin(LEARN_RANGES["seed"], LearnConfig.seed)
        grid.addRow("Seed", self.seed_spin)
        self.form.addLayout(grid)
        advanced = QWidget()
        adv = QFormLayout(advanced)
        adv.setContentsMargins(12, 0, 0, 0)
        self.subject_edit = QLineEdit(LearnConfig.subject)
        self.subject_edit.setObjectName("subjectEdit")
        self.subject_edit.setPlaceholderText("e.g. woven fabric (optional)")
        self.subject_edit.setToolTip("What your photos show, in the model's words. Learn then practises on "
                                     "sentences like \"a photo of woven fabric with a <defect>\", so the defect "
                                     "is learned apart from the surface, and Generate paints with the same kind "
                                     "of sentence. Empty: the paper's captions, the defect alone")
        adv.addRow("Subject", self.subject_edit)
        self.batch_spin = self.int_spin(LEARN_RANGES["batch_size"], LearnConfig.batch_size)
        self.batch_spin.setToolTip("Photos looked at per step: more is steadier but each step is slower and needs "
                                   "more memory")
        adv.addRow("Batch size", self.batch_spin)
        self.crop_combo = QComboBox()
        self.crop_combo.addItems(CROP_CHOICES)
        self.crop_combo.setCurrentText(LearnConfig.crop_to_defect)
        self.crop_combo.setToolTip("Crop around the defect when it is small in its image")
        adv.addRow("Crop to defect", self.crop_combo)
        self.resolution_spin = self.int_spin(LEARN_RANGES["resolution"], 0)
        self.resolution_spin.setSingleStep(64)
        self.resolution_spin.setSuffix(" px")
        self.resolution_spin.setSpecialValueText("model's own")
        self.resolution_spin.setToolTip("The size the defect is learned at, and later painted at. Larger than the "
                                        "model's own keeps the fine texture of a crop the model's size would shrink "
                                        "(the demo model learns the demo fabric at 128 px, not its own 64); each step "
                                        "costs about (size / model size)^2 as much")
        adv.addRow("Working size", self.resolution_spin)
        self.scale_lr_check = QComboBox()
        self.scale_lr_check.addItems(["paper (lr as given)", "reference code (lr x batch)"])
        self.scale_lr_check.setToolTip("The paper uses the learning rate as given; the reference code multiplies it "
                                       "by the batch size, which learns faster but may overshoot")
        adv.addRow("Learning-rate scaling", self.scale_lr_check)
        self.device_combo = self.device_chooser()
        adv.addRow("Device", self.device_combo)
        self.form.addWidget(Collapsible("Advanced", advanced))

        row = QHBoxLayout()
        self.learn_button = QPushButton(icon("learn"), "Learn")
        self.learn_button.setObjectName("learnButton")
        self.learn_button.setMinimumHeight(34)
        row.addWidget(self.learn_button, 1)
        self.form.addLayout(row)
        self.learn_status = self.note()
        self.learn_status.setObjectName("learnStatus")
        self.form.addWidget(self.learn_status)
        self.loss_plot = PlotWidget("Stage 1 loss", x_label="step", log_y=True)
        self.loss_plot.setObjectName("learnLoss")
        self.form.addWidget(self.loss_plot)
        self.form.addStretch(1)

        for key, widget in (("steps", self.steps_spin), ("lr", self.lr_spin), ("seed", self.seed_spin),
                            ("subject", self.subject_edit),
                            ("batch_size", self.batch_spin), ("crop", self.crop_combo),
                            ("resolution", self.resolution_spin),
                            ("lr_scaling", self.scale_lr_check), ("device", self.device_combo)):
            self.persist(key, widget)

        self.learn_action = self.action("&Learn defect embedding", "Ctrl+L", self.learn, "learn")
        self.import_action = self.action("&Import support images…", "Ctrl+I", self.import_dialog, "import")
        self.add_kind_action = self.action("Add &defect kind…", "Ctrl+K", self.add_kind_dialog, "add")
        self.demo_model_action = self.action("Use the de&mo model", "Ctrl+Shift+M", self.use_demo_model, "demo")

        self.kind_combo.currentTextChanged.connect(self._kind_changed)
        self.add_kind_button.clicked.connect(self.add_kind_dialog)
        self.remove_kind_button.clicked.connect(self.remove_kind)
        self.import_button.clicked.connect(self.import_dialog)
        self.remove_support_button.clicked.connect(self.remove_support)
        self.gallery.itemSelectedKey.connect(self._support_clicked)
        self.model_edit.editingFinished.connect(self._model_edited)
        self.demo_model_button.clicked.connect(self.use_demo_model)
        self.model_folder_button.clicked.connect(self._choose_model_folder)
        self.model_file_button.clicked.connect(self._choose_model_file)
        self.learn_button.clicked.connect(self.learn)
        self.compact(self.kind_combo, self.scale_lr_check)
        studio.projectEdited.connect(self._project_edited)
        studio.selectionChanged.connect(self._selection_changed)
        studio.engine.jobProgress.connect(self._job_progress)
        studio.engine.jobFailed.connect(self._job_failed)
        studio.modelStateChanged.connect(self.update_enabled)
        self.project_changed()

    # ================================================================== state
    def current_kind(self) -> str | None:
        text = self.kind_combo.currentText()
        return text or None

    def _kind(self):
        return self.studio.defect_kind(self.current_kind())

    def project_changed(self) -> None:
        self.restore_settings()
        self.loss_plot.clear()  # the shown kind's curve, if any, is drawn again by _fill_kinds
        self.learn_status.setText("")
        self._fill_kinds()
        project = self.studio.project
        self.model_edit.setText(project.model if project is not None else "")
        self._set_model_status("", None)
        if project is not None:
            # Reopening a project does not load a big model just to check it, but a local
            # folder that is gone (the project moved to another machine) is said at once.
            path = Path(project.model).expanduser()
            local = path.is_absolute() or project.model.startswith(("~", "."))
            if project.model and local and not path.exists():
                self.studio.set_model_state(MODEL_FAILED, project.model)
                self._set_model_status(f"The model {project.model} is not there any more: choose it again "
                                       "(folder or file buttons) or use the demo model.", False)
            else:
                self._set_model_status(f"Model: {project.model}" if project.model else "No model chosen.", None)
        self.update_enabled()

    def _project_edited(self, area: str) -> None:
        if area in ("defects", "model"):
            self._fill_kinds()

    def _fill_kinds(self) -> None:
        project = self.studio.project
        current = self.current_kind()
        self.kind_combo.blockSignals(True)
        self.kind_combo.clear()
        if project is not None:
            self.kind_combo.addItems([k.name for k in project.defect_kinds])
            if current and current in [k.name for k in project.defect_kinds]:
                self.kind_combo.setCurrentText(current)
        self.kind_combo.blockSignals(False)
        self._kind_changed(self.current_kind() or "", select=False)

    def _kind_changed(self, _name: str, select: bool = True) -> None:
        kind = self._kind()
        self.gallery.clear()
        if kind is None:
            self.kind_info.setText("Add a defect kind, then import 1–5 photos of it." if self.studio.project else
                                   "Open or create a project (File menu), or open the demo project.")
            self.shots_warning.setText("")
            self.update_enabled()
            return
        for i, support in enumerate(kind.support):
            try:
                image = read_image(self.studio.resolve(support.image))
            except AnoGenError:
                continue
            self.gallery.add(i, image, Path(support.image).name, "accepted" if support.mask else "")
        self._show_learned_curve(kind)
        embedding = f"embedding: {Path(kind.embedding).name}" if kind.embedding else "not learned yet"
        self.kind_info.setText(f"token {kind.token} · init word '{kind.init_word}' · {embedding}")
        self.kind_info.setToolTip(f"Learn teaches the model a new word, the token {kind.token}, that means this "
                                  f"defect. It starts from the init word '{kind.init_word}', a real word close to "
                                  "the defect (scratch, hole, stain): a good one makes learning faster.")
        masked = sum(1 for s in kind.support if s.mask)
        warnings = []
        if len(kind.support) < MIN_SHOTS:
            warnings.append(f"Only {len(kind.support)} support image{'s' if len(kind.support) != 1 else ''}: "
                            f"{MIN_SHOTS} or more learn the defect better.")
        if masked < len(kind.support):
            warnings.append(f"{len(kind.support) - masked} image(s) have no mask yet: paint the defect on each.")
        self.shots_warning.setText(" ".join(warnings))
        self.shots_warning.setVisible(bool(warnings))
        if select:
            self.studio.update_view(kind=kind.name)  # the other panels open on this kind
        if select and self.studio.selection.name != kind.name:
            # Also without support images: the canvas must leave the previous kind's image,
            # or painting would go on editing that kind's mask.
            self.studio.select(Selection("support", kind.name, 0) if kind.support
                               else Selection("defect_kind", kind.name))
        self._highlight_selection(self.studio.selection)
        self.update_enabled()

    def activated(self) -> None:
        shared = self.studio.shared_kind()
        if shared and shared != self.current_kind() and self.kind_combo.findText(shared) >= 0:
            self.kind_combo.setCurrentText(shared)  # the kind chosen in another panel

    def _selection_changed(self, selection: Selection) -> None:
        if selection.kind in ("support", "defect_kind", "embedding") and selection.name != self.current_kind():
            self.kind_combo.setCurrentText(selection.name)
        self._highlight_selection(selection)

    def _highlight_selection(self, selection: Selection) -> None:
        if selection.kind == "support" and selection.name == self.current_kind():
            item = self.gallery.item_for(selection.index)
            if item is not None:
                self.gallery.blockSignals(True)
                self.gallery.setCurrentItem(item)
                self.gallery.blockSignals(False)

    def _support_clicked(self, index: int) -> None:
        kind = self.current_kind()
        if kind is not None:
            self.studio.select(Selection("support", kind, int(index)))

    def _tool_changed(self, tool: str) -> None:
        for t, button in self.tool_buttons.items():
            button.setChecked(t.value == tool)

    def update_enabled(self) -> None:
        has_project = self.studio.project is not None
        kind = self._kind()
        learning = self.is_running(self._learn_job)
        self.add_kind_button.setEnabled(has_project)
        self.remove_kind_button.setEnabled(kind is not None and not learning)
        importing = self.is_running(self._import_job)
        self.import_button.setEnabled(kind is not None and not importing)
        self.import_action.setEnabled(kind is not None and not importing)
        self.remove_support_button.setEnabled(kind is not None and bool(kind.support) and not learning)
        ready = kind is not None and any(s.mask for s in kind.support) and self.studio.model_ready()
        self.learn_button.setEnabled(ready and not learning)
        self.learn_action.setEnabled(ready and not learning)
        self.learn_button.setToolTip("" if ready or kind is None else
                                     "Needs a working diffusion model and at least one painted mask")
        self.learn_button.setText("Learning…" if learning else "Learn")
        for widget in (self.model_edit, self.model_folder_button, self.model_file_button, self.demo_model_button):
            widget.setEnabled(has_project)
        self.demo_model_action.setEnabled(has_project)

    # ================================================================== kinds and images
    def add_kind_dialog(self) -> None:
        if self.studio.project is None:
            return
        name, ok = QInputDialog.getText(self, "Add defect kind", "Name of the defect kind (e.g. scratch):")
        if ok and name.strip():
            word, ok = QInputDialog.getText(self, "Add defect kind",
                                            "Init word: one real word close to the defect, which learning starts "
                                            "from\n(e.g. scratch, hole, stain; a good one learns faster):",
                                            text=name.strip().split()[0].lower())
            if ok:
                self.add_kind(name.strip(), word.strip() or "defect")

    def add_kind(self, name: str, init_word: str = "defect") -> bool:
        try:
            self.studio.open_workspace.add_defect_kind(name, init_word)
        except AnoGenError as exc:
            QMessageBox.warning(self, "Cannot add defect kind", str(exc))
            return False
        self.studio.edited("defects")
        self.kind_combo.setCurrentText(name)
        return True

    def remove_kind(self) -> None:
        kind = self._kind()
        if kind is None:
            return
        answer = QMessageBox.question(self, "Remove defect kind",
                                      f"Remove '{kind.name}' and its {len(kind.support)} support image(s) from the "
                                      "project? The files stay in the project folder.")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_kind(kind.name)

    def delete_kind(self, name: str) -> None:
        """Remove a defect kind; the canvas moves to another kind rather than keep the removed one's image."""
        self.studio.open_workspace.remove_defect_kind(name)
        self.studio.select(Selection())
        self.studio.edited("defects")
        if self._kind() is not None:
            self._kind_changed(self.current_kind() or "")
        else:
            self.controller.show_nothing(None, "No defect kind left: add one (Ctrl+K).")

    def import_dialog(self) -> None:
        if self._kind() is None:
            return
        files, _ = QFileDialog.getOpenFileNames(self, "Import defect photos", self.studio.settings.last_folder,
                                                "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff)")
        if files:
            self.studio.settings.last_folder = str(Path(files[0]).parent)
            self.import_files([Path(f) for f in files])

    def import_files(self, paths: list[Path], large: str = "ask") -> Job | None:
        """Copy defect photos into the current kind, in the background.

        ``large`` says what happens to images whose longer side is above ``LARGE_SIDE``:
        ``ask`` (a dialog), ``downscale`` (to ``DOWNSCALED_SIDE``) or ``keep``.
        """
        from anogen.data.imageio import image_size

        kind = self._kind()
        workspace = self.studio.workspace
        if kind is None or workspace is None or self.is_running(self._import_job):
            return None
        big, problems = [], []
        for path in paths:
            try:
                size = image_size(path)  # the header only: fast even for huge files
            except AnoGenError as exc:
                problems.append(str(exc))
                continue
            if max(size) > LARGE_SIDE:
                big.append((path, size))
        if large == "ask" and big:
            large = self._ask_large(big)
            if not large:
                return None
        self._import_problems = problems
        name = kind.name
        task = ImportTask(workspace, name, list(paths), DOWNSCALED_SIDE if large == "downscale" else None)
        self._import_job = self.studio.engine.submit(
            f"Import {len(paths)} image(s) into '{name}'", run_import, task, heavy=False,
            on_result=lambda result: self._imported(name, result),
            on_failure=lambda _state: self._imported(name, None))
        self.kind_info.setText(f"Importing {len(paths)} image(s)…")
        self.update_enabled()
        return self._import_job

    def _ask_large(self, big: list[tuple[Path, tuple[int, int]]]) -> str:
        """Downscale or keep very large images; returns ``downscale``, ``keep`` or ``""`` (cancel)."""
        (path, (width, height)), more = big[0], len(big) - 1
        box = QMessageBox(QMessageBox.Icon.Question, "Very large images",
                          f"{path.name} is {width}×{height} pixels" + (f" (and {more} more are over {LARGE_SIDE} px)"
                                                                        if more else "") + ".", parent=self)
        box.setInformativeText(
            f"The models work at a few hundred pixels, and painting masks on images this large is slow. "
            f"Downscaling to {DOWNSCALED_SIDE} px on the longer side keeps the project light; keep the "
            "originals when the defects are tiny (Learn then crops around them).")
        downscale = box.addButton(f"Downscale to {DOWNSCALED_SIDE} px", QMessageBox.ButtonRole.AcceptRole)
        keep = box.addButton("Keep the originals", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(downscale)
        box.exec()
        clicked = box.clickedButton()
        return "downscale" if clicked is downscale else "keep" if clicked is keep else ""

    def _imported(self, kind: str, result: ImportResult | None) -> None:
        """Runs when the import job ends (``result`` None: it failed or was cancelled part way)."""
        self.studio.edited("defects")
        problems = self._import_problems + (result.problems if result is not None else [])
        self._import_problems = []
        try:
            defect = self.studio.project.defect_kind(kind)
        except (KeyError, AnoGenError, ValueError, AttributeError):
            return
        if result is not None and result.added and defect.support:
            self.studio.select(Selection("support", kind, len(defect.support) - 1))
        if result is not None and result.downscaled:
            self.studio.message.emit(f"{result.downscaled} image(s) downscaled to {DOWNSCALED_SIDE} px on import.")
        self._kind_changed(self.current_kind() or "", select=False)
        if problems:
            QMessageBox.warning(self, "Some images were not imported", "\n".join(problems))

    def remove_support(self) -> None:
        kind = self._kind()
        keys = self.gallery.selected_keys()
        if kind is None or not keys:
            return
        for index in sorted(keys, reverse=True):
            self.studio.open_workspace.remove_support_image(kind.name, int(index))
        self.studio.select(Selection("defect_kind", kind.name))
        self.studio.edited("defects")
        # The indices moved: what the canvas shows (and where its strokes go) must be reloaded.
        self.controller.show_selection(Selection("defect_kind", kind.name), force=True)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and self._kind() is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        images = [p for p in paths if p.is_file() and is_image_file(p)]
        if images:
            self.import_files(images)
            event.acceptProposedAction()

    # ================================================================== model
    def _choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Diffusers model folder", self.studio.settings.last_folder)
        if folder:
            self.set_model(folder)

    def _choose_model_file(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", self.studio.settings.last_folder,
                                              "Checkpoints (*.safetensors *.ckpt)")
        if file:
            self.set_model(file)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (watched is self.model_edit and event.type() == QEvent.Type.KeyPress
                and isinstance(event, QKeyEvent) and event.key() == Qt.Key.Key_Escape
                and self.studio.model_state == MODEL_FAILED):
            self.revert_model()
            return True
        return super().eventFilter(watched, event)

    def _model_edited(self) -> None:
        # editingFinished fires on Return and again when the field loses focus (an error
        # dialog opening is enough): only a changed text is a new choice.
        if not self.model_edit.isModified():
            return
        self.model_edit.setModified(False)
        self.set_model(self.model_edit.text())

    def use_demo_model(self) -> None:
        """Choose the demo model shipped in ``resources/`` (checked like any other choice)."""
        from anogen.resources import demo_model_path

        try:
            path = demo_model_path()
        except AnoGenError as exc:
            QMessageBox.warning(self, "Demo model", str(exc))
            return
        self.set_model(str(path))

    def set_model(self, source: str) -> Job | None:
        """Check ``source``; only a model that passes replaces the project's model.

        Until then (and when the check fails) the project keeps its last good model, and
        the jobs that need a model are disabled while the field shows a broken one.
        """
        source = source.strip()
        project = self.studio.project
        self.model_edit.setText(source)
        if project is None:
            return None
        if not source:  # an emptied field is no choice: show the model in use again
            self.model_edit.setText(project.model)
            self.studio.set_model_state(MODEL_UNCHECKED, "")
            self._set_model_status(f"Model: {project.model}" if project.model else "No model chosen.", None)
            self.update_enabled()
            return None
        if self.is_running(self._check_job) and self.studio.model_candidate == source:
            return self._check_job
        self.studio.set_model_state(MODEL_CHECKING, source)
        self._set_model_status("Checking the model…", None)
        job = self.studio.engine.submit(f"Check model {source}", check_model, source, heavy=False,
                                        on_result=lambda description: self._model_passed(source, description))
        self._check_job = job
        self.update_enabled()
        return job

    def _model_passed(self, source: str, description: str) -> None:
        project = self.studio.project
        if project is None or self.studio.model_candidate != source:
            return  # a newer choice is being checked
        if project.model != source:
            project.model = source
            self.studio.edited("model")
        self.studio.set_model_state(MODEL_OK, source)
        self._set_model_status(description, True)
        self.update_enabled()

    def _model_failed(self, source: str, reason: str) -> None:
        project = self.studio.project
        if project is None or self.studio.model_candidate != source:
            return
        self.studio.set_model_state(MODEL_FAILED, source)
        kept = (f" The project still uses {project.model}: fix the path, press Esc to go back to it, or use the "
                "demo model." if project.model else " Choose a model folder or use the demo model.")
        self._set_model_status(reason.rstrip(". ") + "." + kept, False)
        self.update_enabled()

    def revert_model(self) -> None:
        """Put the project's (last good) model back in the field."""
        project = self.studio.project
        if project is None or self.studio.model_state != MODEL_FAILED:
            return
        # No new check: it is the model the project already used (and that passed before).
        self.model_edit.setText(project.model)
        self.studio.set_model_state(MODEL_UNCHECKED, "")
        self._set_model_status(f"Model: {project.model}" if project.model else "No model chosen.", None)
        self.update_enabled()

    def _job_failed(self, job: Job, message: str, _details: str) -> None:
        if job is self._check_job:
            self._model_failed(str(job.config), message)
        elif job is self._learn_job:
            self.learn_status.setText(f"Learning failed: {message}")

    def _set_model_status(self, text: str, ok: bool | None) -> None:
        from app import theme

        mark = "" if ok is None else ("✓ " if ok else "✗ ")
        self.model_status.setText(mark + text)
        color = None if ok is None else (theme.colors().good if ok else theme.colors().bad)
        self.model_status.setStyleSheet(f"color: {(color or theme.colors().muted).name()};")

    # ================================================================== learn
    def learn(self) -> Job | None:
        """Start stage 1 for the current defect kind in the background."""
        kind = self._kind()
        workspace = self.studio.workspace
        if kind is None or workspace is None or self.is_running(self._learn_job):
            return None
        shots = [s for s in kind.support if s.mask]
        if not shots:
            QMessageBox.information(self, "Learn", "Paint the defect mask on at least one support image first.")
            return None
        if not self.studio.model_ready():
            return None
        model = workspace.project.model  # the last model that passed its check, never a typo
        config = LearnConfig(
            images=[workspace.resolve(s.image) for s in shots],
            masks=[workspace.resolve(s.mask) for s in shots],
            token=kind.token, init_word=kind.init_word, subject=self.subject_edit.text().strip(),
            steps=self.steps_spin.value(), lr=self.lr_spin.value(),
            seed=self.seed_spin.value(), batch_size=self.batch_spin.value(),
            crop_to_defect=self.crop_combo.currentText(), scale_lr=self.scale_lr_check.currentIndex() == 1,
            resolution=self.resolution_spin.value() or None, device=self.device_combo.currentText())
        out = workspace.embeddings_dir / f"{kind.token.strip('<>')}.safetensors"
        self.loss_plot.clear()
        self.learn_status.setText(f"Learning {kind.token} from {len(shots)} masked image(s), "
                                  f"{config.steps} steps…")
        name = self._learning_kind = kind.name
        self._learn_job = self.studio.engine.submit(
            f"Learn '{name}'", run_learn, LearnTask(model, config, out),
            on_result=lambda path: self._learned(name, path),
            on_failure=self._learn_failed)
        self.update_enabled()
        return self._learn_job

    def _show_learned_curve(self, kind) -> None:
        """The kind's stage-1 loss curve: live while it learns, else the one its embedding
        file keeps."""
        self.loss_plot.clear()
        if self._learning(kind.name):
            assert self._learn_job is not None
            points = [(step, m["loss"]) for step, m in self._learn_job.metrics_history
                      if "loss" in m and math.isfinite(m["loss"])]
            if points:
                self.loss_plot.set_series("loss", [x for x, _ in points], [y for _, y in points])
            self.learn_status.setText(f"Learning {kind.token}…")
            return
        if kind.embedding:
            curve = read_loss_curve(self.studio.resolve(kind.embedding))
            if curve:
                self.loss_plot.set_series("loss", range(1, len(curve) + 1), curve)
                self.learn_status.setText(f"Learned in {len(curve)} steps, final loss {curve[-1]:.4g}.")
                return
        self.learn_status.setText("")

    def _learning(self, kind: str) -> bool:
        return self.is_running(self._learn_job) and self._learning_kind == kind

    def _learn_failed(self, state: str) -> None:
        if state == "cancelled":
            self.learn_status.setText("Learning cancelled.")

    def _learned(self, kind: str, path: Path) -> None:
        workspace = self.studio.open_workspace
        workspace.set_embedding(kind, path)
        self.studio.update_view(kind=kind)  # Generate opens on the kind just learned
        self.studio.edited("defects")
        job = self._learn_job
        final = job.metrics_history[-1][1].get("loss") if job and job.metrics_history else None
        self.learn_status.setText(f"Embedding saved: {workspace.relative(path)}"
                                  + (f" (final loss {final:.4g})" if final is not None else ""))

    def _job_progress(self, job: Job, report) -> None:
        if (job is self._learn_job and self._learning(self.current_kind() or "") and "loss" in report.metrics
                and math.isfinite(report.metrics["loss"])):
            self.loss_plot.add_point("loss", report.step, report.metrics["loss"])

    def prepare_for_screenshot(self) -> None:
        self.canvas.set_tool(Tool.BRUSH)
        if self.loss_plot.series():
            self.scroll_area.ensureWidgetVisible(self.loss_plot, 0, 0)
