"""Stage 2: boxes on good images, Preview one sample, Generate N, review the gallery."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from anogen.data.box import Box
from anogen.data.imageio import read_image, read_mask
from anogen.diffusion.config import (
    BOXES_PER_IMAGE,
    BOXES_PER_IMAGE_RANGE,
    DEFECT_OUTLINES,
    GENERATE_RANGES,
    SAMPLES_PER_BOX,
    SAMPLES_PER_BOX_RANGE,
    GenerateConfig,
)
from anogen.diffusion.crop import CROP_CHOICES
from anogen.errors import AnoGenError
from app.canvas.qimage import rgb_to_pixmap
from app.canvas_controller import CanvasController
from app.engine import Job
from app.icons import icon
from app.panels.base import Panel
from app.studio import REVIEW_CHOICES, Selection, Studio
from app.tasks import (
    GenerateTask,
    PreviewResult,
    PreviewTask,
    ProposeTask,
    RegenerateTask,
    run_generate,
    run_preview,
    run_propose,
    run_regenerate,
)
from app.widgets.collapsible import Collapsible
from app.widgets.gallery import Gallery

if TYPE_CHECKING:  # the module imports OpenCV: loaded when first needed, not at start-up
    from anogen.data.boxes import ForegroundMethod

PREVIEW_SIDE = 160
# The order of the "Boxes inside" choices.
FOREGROUND_MODES: tuple[ForegroundMethod, ...] = ("grabcut", "otsu", "all")


def plan_samples(boxes: dict[str, list[Box]], per_box: int) -> tuple[int, dict[str, list[Box]], str]:
    """Spread samples so that every drawn box gets at least ``per_box`` of them.

    The library makes the same number of samples for every image and draws sample ``k``
    from box ``k % len(boxes)`` (``anogen.diffusion.sampler.generate_set``). So each image's
    list repeats its boxes in runs (box i fills samples ``i*P/b`` to ``(i+1)*P/b``), with
    ``P = per_box x`` the most boxes on one image. Returns ``P``, the lists, and a note for
    the user when box counts differ (boxes on images with fewer boxes then get more).
    """
    counts = [len(b) for b in boxes.values() if b]
    most = max(counts, default=1)
    per_image = per_box * most
    plan = {name: [drawn[k * len(drawn) // per_image] for k in range(per_image)]
            for name, drawn in boxes.items() if drawn}
    note = ""
    if counts and min(counts) < most:
        note = (f"Images have {min(counts)} to {most} boxes and each image gets {per_image} samples, so boxes on "
                f"images with fewer boxes get more than {per_box} each.")
    return per_image, plan, note


class GeneratePanel(Panel):
    name = "generate"
    title = "Generate"

    def __init__(self, studio: Studio, controller: CanvasController, parent: QWidget | None = None) -> None:
        super().__init__(studio, controller, parent)
        self._preview_job: Job | None = None
        self._generate_job: Job | None = None
        self._propose_job: Job | None = None
        self._regenerate_job: Job | None = None
        self.last_preview: PreviewResult | None = None
        self._gallery_set: str | None = None  # the set the gallery shows, to keep its selection on refill
        self._generate_note = ""  # why some boxes get more samples than N, shown until the next run

        self.heading("Defect kind")
        self.kind_combo = QComboBox()
        self.kind_combo.setObjectName("generateKindCombo")
        self.form.addWidget(self.kind_combo)
        self.kind_info = self.note()
        self.form.addWidget(self.kind_info)

        self.heading("Boxes on good images")
        self.form.addWidget(self.note("Select a good image in the project tree and draw boxes (R), or let the "
                                      "tool propose them inside the part, sized for this defect kind."))
        grid = QFormLayout()
        sizes = QHBoxLayout()
        self.size_spins: list[QDoubleSpinBox] = []
        for tip in ("min width", "max width", "min height", "max height"):
            spin = QDoubleSpinBox()
            spin.setRange(0.01, 1.0)
            spin.setSingleStep(0.01)
            spin.setDecimals(2)
            spin.setToolTip(f"Box {tip}, as a fraction of the image side")
            sizes.addWidget(spin)
            self.size_spins.append(spin)
        grid.addRow("Size (w lo/hi, h lo/hi)", sizes)
        self.boxes_per_image = self.int_spin(BOXES_PER_IMAGE_RANGE, BOXES_PER_IMAGE)
        grid.addRow("Boxes per image", self.boxes_per_image)
        self.foreground_combo = QComboBox()
        self.foreground_combo.addItems(["part (GrabCut)", "part (Otsu)", "whole image (textures)"])
        self.foreground_combo.setToolTip("Where boxes may go: inside the part found in the image, or anywhere")
        grid.addRow("Boxes inside", self.foreground_combo)
        self.foreground_combo.currentIndexChanged.connect(
            lambda index: self.studio.update_view(foreground=FOREGROUND_MODES[index]))
        self.form.addLayout(grid)
        row = QHBoxLayout()
        self.propose_button = QPushButton(icon("propose"), "Propose boxes")
        self.propose_button.setObjectName("proposeButton")
        self.propose_scope = QComboBox()
        self.propose_scope.addItems(["on the selected image", "on images without boxes"])
        row.addWidget(self.propose_button)
        row.addWidget(self.propose_scope, 1)
        self.form.addLayout(row)
        self.boxes_info = self.note()
        self.form.addWidget(self.boxes_info)

        self.heading("Generate (stage 2)")
        grid = QFormLayout()
        self.steps_spin = self.int_spin(GENERATE_RANGES["steps"], GenerateConfig.steps)
        self.steps_spin.setToolTip("How many refinement passes make each defect: more look cleaner and take longer "
                                   f"({GenerateConfig.steps} is the paper's; 20 is enough for a quick look)")
        grid.addRow("Denoising steps (DDIM)", self.steps_spin)
        self.guidance_spin = self.float_spin(GENERATE_RANGES["guidance"], GenerateConfig.guidance)
        self.guidance_spin.setToolTip("How strongly each sample follows the learned defect: higher gives more "
                                      "pronounced defects, too high gives harsh artefacts "
                                      f"(paper: {GenerateConfig.guidance:g})")
        grid.addRow("Guidance (defect strength)", self.guidance_spin)
        self.seed_spin = self.int_spin(GENERATE_RANGES["seed"], GenerateConfig.seed)
        self.seed_spin.setToolTip("The same seed gives the same samples again; change it for different ones")
        grid.addRow("Seed", self.seed_spin)
        self.per_box_spin = self.int_spin(SAMPLES_PER_BOX_RANGE, SAMPLES_PER_BOX)
        self.per_box_spin.setToolTip("Every box gets N generated defects, each with its own seed")
        grid.addRow("Samples per box (N)", self.per_box_spin)
        self.images_spin = QSpinBox()
        self.images_spin.setRange(1, 100000)
        self.images_spin.setValue(8)
        self.images_spin.setToolTip("How many good images to use when none has boxes yet (boxes are then proposed)")
        grid.addRow("Good images (without boxes)", self.images_spin)
        self.form.addLayout(grid)
        advanced = QWidget()
        adv = QFormLayout(advanced)
        adv.setContentsMargins(12, 0, 0, 0)
        self.feather_spin = self.int_spin(GENERATE_RANGES["feather"], GenerateConfig.feather)
        self.feather_spin.setToolTip("Softens the edge where the generated defect meets the original image")
        adv.addRow("Soft edge, feather (px)", self.feather_spin)
        self.strength_spin = self.float_spin(GENERATE_RANGES["strength"], GenerateConfig.strength, step=0.05)
        self.strength_spin.setToolTip("1 paints each defect from pure noise (the paper); lower starts from the good "
                                      "image part way, so the box keeps more of its surface")
        adv.addRow("Strength", self.strength_spin)
        self.restore_detail_check = QCheckBox("Keep the surface's fine texture")
        self.restore_detail_check.setChecked(GenerateConfig.restore_detail)
        self.restore_detail_check.setToolTip("Put back the fine texture the model's VAE loses, wherever the model "
                                             "did not paint a defect (helps small models and large crops)")
        adv.addRow("", self.restore_detail_check)
        self.outlines_check = QCheckBox("Paint defect outlines")
        self.outlines_check.setObjectName("outlinesCheck")
        self.outlines_check.setChecked(DEFECT_OUTLINES)
        self.outlines_check.setToolTip("Paint each defect in the outline of one of this kind's masked support "
                                       "images, fitted into its box, instead of filling the whole box: a scratch "
                                       "stays a thin line, and the sample's mask is the outline, not the box")
        adv.addRow("", self.outlines_check)
        self.crop_combo = QComboBox()
        self.crop_combo.addItems(CROP_CHOICES)
        self.crop_combo.setCurrentText(GenerateConfig.crop)
        adv.addRow("Crop around box", self.crop_combo)
        self.device_combo = self.device_chooser()
        adv.addRow("Device", self.device_combo)
        self.form.addWidget(Collapsible("Advanced", advanced))
        row = QHBoxLayout()
        self.preview_button = QPushButton(icon("preview"), "Preview")
        self.preview_button.setObjectName("previewButton")
        self.generate_button = QPushButton(icon("generate"), "Generate N")
        self.generate_button.setObjectName("generateButton")
        for button in (self.preview_button, self.generate_button):
            button.setMinimumHeight(34)
            row.addWidget(button, 1)
        self.form.addLayout(row)
        self.preview_label = QLabel()
        self.preview_label.setObjectName("previewImage")
        self.preview_label.setFixedSize(PREVIEW_SIDE, PREVIEW_SIDE)
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setVisible(False)
        self.status = self.note()
        self.status.setObjectName("generateStatus")
        row = QHBoxLayout()
        row.addWidget(self.preview_label)
        row.addWidget(self.status, 1)
        self.form.addLayout(row)

        # The samples live in a pane of their own, which the main window shows beside the
        # canvas where a grid of thumbnails has room (a long scrolling panel squeezed it).
        self.results_pane = QWidget()
        self.results_pane.setObjectName("samplesPane")
        pane = QVBoxLayout(self.results_pane)
        pane.setContentsMargins(6, 4, 6, 4)
        row = QHBoxLayout()
        row.addWidget(QLabel("Generated set"))
        self.set_combo = QComboBox()
        self.set_combo.setObjectName("setCombo")
        row.addWidget(self.set_combo, 1)
        self.accept_button = QPushButton(icon("accept"), "Accept")
        self.reject_button = QPushButton(icon("reject"), "Reject")
        self.regenerate_button = QPushButton(icon("regenerate"), "Regenerate")
        for button in (self.accept_button, self.reject_button, self.regenerate_button):
            row.addWidget(button)
        row.addWidget(QLabel("Before | after"))
        self.compare_slider = QSlider(Qt.Orientation.Horizontal)
        self.compare_slider.setRange(0, 100)
        self.compare_slider.setValue(50)
        self.compare_slider.setMaximumWidth(160)
        row.addWidget(self.compare_slider)
        pane.addLayout(row)
        # Above the gallery: when the pane is short, the thumbnails scroll and the note stays readable.
        self.gallery_info = self.note(fitted=True)
        pane.addWidget(self.gallery_info)
        self.gallery = Gallery(side=120)
        self.gallery.setObjectName("sampleGallery")
        pane.addWidget(self.gallery, 1)
        self.heading("Review")
        self.form.addWidget(self.note("Generated samples are shown under the canvas. New ones are \"to review\": "
                                      "accept (A) or reject (X) each one there."))
        grid = QFormLayout()
        self.review_combo = QComboBox()
        self.review_combo.setObjectName("reviewPolicy")
        self.review_combo.addItems(list(REVIEW_CHOICES))
        self.review_combo.setToolTip("Whether Train may use samples you have not looked at yet. Rejected samples "
                                     "are never used.")
        grid.addRow("Unreviewed samples are", self.review_combo)
        self.form.addLayout(grid)
        self.review_combo.currentIndexChanged.connect(lambda _i: self._update_gallery_info())
        self.form.addStretch(1)

        for key, widget in (("steps", self.steps_spin), ("guidance", self.guidance_spin), ("seed", self.seed_spin),
                            ("per_box", self.per_box_spin), ("images", self.images_spin),
                            ("boxes_per_image", self.boxes_per_image), ("feather", self.feather_spin),
                            ("strength", self.strength_spin), ("restore_detail", self.restore_detail_check),
                            ("outlines", self.outlines_check),
                            ("crop", self.crop_combo), ("device", self.device_combo), ("review", self.review_combo)):
            self.persist(key, widget)

        self.preview_action = self.action("&Preview one sample", "Ctrl+P", self.preview, "preview")
        self.generate_action = self.action("&Generate N samples", "Ctrl+G", self.generate, "generate")
        self.propose_action = self.action("Pr&opose boxes", "Ctrl+Shift+B", self.propose, "propose")
        self.accept_action = self.action("&Accept sample", "A", lambda: self.set_status("accepted"), "accept")
        self.reject_action = self.action("Re&ject sample", "X", lambda: self.set_status("rejected"), "reject")
        self.regenerate_action = self.action("&Regenerate sample (new seed)", "Ctrl+Shift+R", self.regenerate,
                                             "regenerate")

        self.kind_combo.currentTextChanged.connect(lambda _t: self._kind_changed())
        self.kind_combo.activated.connect(lambda _i: self.studio.update_view(kind=self.kind_combo.currentText()))
        self.propose_button.clicked.connect(self.propose)
        self.preview_button.clicked.connect(self.preview)
        self.per_box_spin.valueChanged.connect(lambda _n: self.update_enabled())  # the button names N
        self.generate_button.clicked.connect(self.generate)
        self.set_combo.currentTextChanged.connect(lambda _t: self._fill_gallery())
        self.gallery.itemSelectedKey.connect(self._sample_clicked)
        self.accept_button.clicked.connect(lambda: self.set_status("accepted"))
        self.reject_button.clicked.connect(lambda: self.set_status("rejected"))
        self.regenerate_button.clicked.connect(self.regenerate)
        self.compare_slider.valueChanged.connect(lambda v: self.canvas.set_compare_split(v / 100))
        self.canvas.compareChanged.connect(self._compare_moved)
        self.compact(self.kind_combo, self.set_combo, self.propose_scope, self.foreground_combo)
        studio.projectEdited.connect(self._project_edited)
        studio.selectionChanged.connect(self._selection_changed)
        studio.modelStateChanged.connect(self.update_enabled)
        studio.engine.jobProgress.connect(self._job_progress)
        studio.engine.jobFailed.connect(lambda job, message, _details: self._job_ended(job, f"failed: {message}"))
        studio.engine.jobCancelled.connect(lambda job: self._job_ended(job, "cancelled."))
        self.project_changed()

    # ================================================================== state
    def _kind(self):
        return self.studio.defect_kind(self.kind_combo.currentText())

    def activated(self) -> None:
        shared = self.studio.shared_kind()
        if shared and shared != self.kind_combo.currentText() and self.kind_combo.findText(shared) >= 0:
            self.kind_combo.setCurrentText(shared)

    def project_changed(self) -> None:
        self.restore_settings()
        # Remembered per project: a texture project keeps "whole image" across sessions.
        mode = self.studio.view_state().get("foreground", "grabcut")
        self.foreground_combo.setCurrentIndex(FOREGROUND_MODES.index(mode) if mode in FOREGROUND_MODES else 0)
        self._fill_kinds()
        self._fill_sets()
        self.status.setText("")
        self.preview_label.setVisible(False)
        self.update_enabled()

    def _project_edited(self, area: str) -> None:
        if area in ("defects", "model"):
            self._fill_kinds()
        if area == "generated":
            self._fill_sets()
        if area == "good":
            self._update_boxes_info()
        self.update_enabled()

    def _fill_kinds(self) -> None:
        project = self.studio.project
        current = self.kind_combo.currentText()
        self.kind_combo.blockSignals(True)
        self.kind_combo.clear()
        if project is not None:
            for kind in project.defect_kinds:
                self.kind_combo.addItem(kind.name)
            learned = [k.name for k in project.defect_kinds if k.embedding]
            shared = self.studio.shared_kind()
            if shared in learned:  # the kind just learned (or last worked on) in another panel
                self.kind_combo.setCurrentText(shared)
            elif current in [k.name for k in project.defect_kinds]:
                self.kind_combo.setCurrentText(current)
            elif learned:
                self.kind_combo.setCurrentText(learned[0])
        self.kind_combo.blockSignals(False)
        self._kind_changed()

    def _kind_changed(self) -> None:
        from anogen.data.boxes import DEFAULT_SIZE_RANGE, size_range_from_masks

        kind = self._kind()
        if kind is None:
            self.kind_info.setText("No defect kind yet: add one in the Defects panel.")
            self.update_enabled()
            return
        self.kind_info.setText(f"embedding {Path(kind.embedding).name}" if kind.embedding else
                               "Not learned yet: run Learn in the Defects panel first.")
        size = kind.box_size
        if size is None:
            try:
                masks = [read_mask(self.studio.resolve(s.mask)) for s in kind.support if s.mask]
                size = tuple(size_range_from_masks(masks).to_list()) if masks else None
            except AnoGenError:
                size = None
        size = size or tuple(DEFAULT_SIZE_RANGE.to_list())
        for spin, value in zip(self.size_spins, size):
            spin.blockSignals(True)
            spin.setValue(float(value))
            spin.blockSignals(False)
        self._update_boxes_info()
        self.update_enabled()

    def _size_range(self):
        from anogen.data.boxes import BoxSizeRange

        return BoxSizeRange(*(spin.value() for spin in self.size_spins))

    def _update_boxes_info(self) -> None:
        project = self.studio.project
        if project is None:
            self.boxes_info.setText("")
            return
        with_boxes = [g for g in project.good_images if g.boxes]
        total = sum(len(g.boxes) for g in with_boxes)
        self.boxes_info.setText(f"{total} box(es) on {len(with_boxes)} of {len(project.good_images)} good images."
                                + ("" if with_boxes else " Generate N proposes boxes when none are drawn."))

    def _selected_good(self):
        selection = self.studio.selection
        if selection.kind != "good" or self.studio.project is None:
            return None
        try:
            return self.studio.project.good_image(selection.name)
        except (KeyError, AnoGenError, ValueError):
            return None

    def update_enabled(self) -> None:
        kind = self._kind()
        project = self.studio.project
        busy = any(self.is_running(j) for j in (self._preview_job, self._generate_job, self._regenerate_job))
        model_ok = self.studio.model_ready()
        learned = kind is not None and bool(kind.embedding) and model_ok
        good = self._selected_good()
        can_preview = learned and good is not None and bool(good.boxes) and not busy
        self.preview_button.setEnabled(can_preview)
        self.preview_action.setEnabled(can_preview)
        no_model = ("The diffusion model in the Defects panel did not pass its check: fix it or use the demo model"
                    if not model_ok else "")
        self.preview_button.setToolTip("Preview one sample in the selected box of the selected good image (Ctrl+P)"
                                       if can_preview else no_model or
                                       "Select a good image with a box, and learn the kind first")
        can_generate = learned and project is not None and bool(project.good_images) and not busy
        self.generate_button.setEnabled(can_generate)
        self.generate_action.setEnabled(can_generate)
        self.generate_button.setToolTip(no_model)
        self.generate_button.setText(f"Generate {self.per_box_spin.value()} per box")
        can_propose = project is not None and bool(project.good_images) and not self.is_running(self._propose_job)
        self.propose_button.setEnabled(can_propose)
        self.propose_action.setEnabled(can_propose)
        has_sample = bool(self.gallery.selected_keys())
        for widget in (self.accept_button, self.reject_button, self.accept_action, self.reject_action):
            widget.setEnabled(has_sample)
        can_regenerate = has_sample and learned and not busy
        self.regenerate_button.setEnabled(can_regenerate)
        self.regenerate_action.setEnabled(can_regenerate)

    # ================================================================== boxes
    def propose(self) -> Job | None:
        project = self.studio.project
        if project is None:
            return None
        kind = self._kind()
        if self.propose_scope.currentIndex() == 0:
            good = self._selected_good()
            targets = [good] if good is not None else []
        else:
            targets = [g for g in project.good_images if not g.boxes]
        if not targets:
            self.status.setText("Select a good image in the project tree first."
                                if self.propose_scope.currentIndex() == 0 else "Every good image already has boxes.")
            return None
        try:
            size_range = self._size_range()
        except AnoGenError as exc:
            QMessageBox.warning(self, "Box size", str(exc))
            return None
        if kind is not None:
            w_lo, w_hi, h_lo, h_hi = size_range.to_list()
            self.studio.open_workspace.set_box_size(kind.name, (w_lo, w_hi, h_lo, h_hi))
        paths = {self.studio.resolve(g.image): g.image for g in targets}
        label = kind.name if kind is not None else ""

        def store(result) -> None:  # result: app.tasks.ProposeResult
            shown = self.controller.current
            for path, boxes in result.boxes.items():
                if shown is not None and shown.kind == "good" and shown.name == paths[path]:
                    # On the image being shown the proposal is one undoable canvas edit
                    # (Ctrl+Z brings back the boxes it replaced); the canvas saves it.
                    self.controller.canvas.replace_boxes([(b.x0, b.y0, b.x1, b.y1) for b in boxes],
                                                         labels=[label] * len(boxes))
                    continue
                self.studio.open_workspace.set_boxes(paths[path], [replace(b, defect_kind=label) for b in boxes])
            self.studio.edited("good")
            text = f"Proposed boxes on {len(result.boxes)} image(s)."
            if result.problems:
                text += f" No box fits on {len(result.problems)}: {result.problems[0]}"
            self.status.setText(text)

        foreground = FOREGROUND_MODES[self.foreground_combo.currentIndex()]
        self._propose_job = self.studio.engine.submit(
            "Propose boxes", run_propose,
            ProposeTask(list(paths), size_range, self.boxes_per_image.value(), self.seed_spin.value(),
                        foreground=foreground),
            heavy=False, on_result=store)
        return self._propose_job

    # ================================================================== generation
    def _generate_config(self, preview_every: int = 0) -> GenerateConfig:
        """The sampler's settings from the panel."""
        return GenerateConfig(steps=self.steps_spin.value(), guidance=self.guidance_spin.value(),
                              feather=self.feather_spin.value(), crop=self.crop_combo.currentText(),
                              strength=self.strength_spin.value(),
                              restore_detail=self.restore_detail_check.isChecked(),
                              preview_every=preview_every, seed=self.seed_spin.value())

    def _preview_task(self, image_rel: str, box: tuple[int, int, int, int], seed: int) -> PreviewTask | None:
        kind = self._kind()
        project = self.studio.project
        if kind is None or not kind.embedding or project is None:
            return None
        every = max(1, self.steps_spin.value() // 10)  # about ten intermediate previews
        return PreviewTask(project.model, self.studio.resolve(kind.embedding), self.studio.resolve(image_rel),
                           box, seed, self._generate_config(every), self.device_combo.currentText(),
                           self._outline_masks(kind))

    def _outline_masks(self, kind) -> list[Path] | None:
        """The masks whose outlines stage 2 paints: the kind's masked support images, when
        the panel asks for outlines (None: whole boxes)."""
        if not self.outlines_check.isChecked():
            return None
        return [self.studio.resolve(shot.mask) for shot in kind.support if shot.mask] or None

    def preview(self) -> Job | None:
        """Generate one sample in the selected (or first) box of the selected good image."""
        good = self._selected_good()
        if good is None or not good.boxes:
            self.status.setText("Select a good image with at least one box.")
            return None
        chosen = self.canvas.selected_boxes()
        b = good.boxes[chosen[0] if chosen and chosen[0] < len(good.boxes) else 0]
        task = self._preview_task(good.image, (b.x0, b.y0, b.x1, b.y1), self.seed_spin.value())
        if task is None:
            return None
        self.status.setText("Denoising…")
        self.preview_label.setVisible(True)
        self.preview_label.clear()
        self._preview_job = self.studio.engine.submit(f"Preview on {Path(good.image).name}", run_preview, task,
                                                      on_result=self._previewed)
        self.update_enabled()
        return self._preview_job

    def _previewed(self, result: PreviewResult) -> None:
        self.last_preview = result
        self.controller.show_compare(result.source, result.image, [result.box], self.compare_slider.value() / 100)
        self._set_preview_image(result.image[result.box[1]:result.box[3], result.box[0]:result.box[2]])
        self.status.setText(f"Preview done (seed {result.seed}). Drag on the canvas to compare before and after.")

    def _set_preview_image(self, rgb: np.ndarray) -> None:
        pixmap = rgb_to_pixmap(np.ascontiguousarray(rgb)).scaled(
            PREVIEW_SIDE, PREVIEW_SIDE, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        self.preview_label.setPixmap(pixmap)

    def _job_ended(self, job: Job, how: str) -> None:
        """A failed or cancelled job of this panel replaces its "…ing" line, which would go stale."""
        names = {id(self._preview_job): "Preview", id(self._generate_job): "Generation",
                 id(self._regenerate_job): "Regeneration", id(self._propose_job): "Box proposal"}
        what = names.get(id(job)) if job is not None else None
        if what is None:
            return
        if job is self._preview_job:
            self.preview_label.setVisible(False)
        self.status.setText(f"{what} {how}")

    def _job_progress(self, job: Job, report) -> None:
        if job in (self._preview_job, self._regenerate_job) and report.preview is not None:
            self.preview_label.setVisible(True)
            self._set_preview_image(report.preview)
            self.status.setText(f"Denoising… step {report.step}/{report.total}")

    def generate(self) -> Job | None:
        """Generate N samples per good image into a new generated set of the project."""
        kind = self._kind()
        workspace = self.studio.workspace
        if kind is None or workspace is None or not kind.embedding:
            return None
        project = workspace.project
        boxed = [g for g in project.good_images if g.boxes and (not any(b.defect_kind for b in g.boxes) or
                                                                any(b.defect_kind in ("", kind.name) for b in g.boxes))]
        per_box = self.per_box_spin.value()
        note = ""
        if boxed:
            normals = [workspace.resolve(g.image) for g in boxed]
            drawn = {workspace.resolve(g.image).name: [b for b in g.boxes if b.defect_kind in ("", kind.name)]
                     for g in boxed}
            per_image, boxes, note = plan_samples(drawn, per_box)
        else:
            normals = [workspace.resolve(g.image) for g in project.good_images[: self.images_spin.value()]]
            boxes = None
            per_image = per_box * self.boxes_per_image.value()  # proposed boxes get N each too
        name = f"{kind.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lower()
        out = workspace.generated_dir / slug
        task = GenerateTask(project.model, workspace.resolve(kind.embedding), normals, out, kind.name,
                            per_image=per_image, samples_per_box=per_box,
                            boxes=boxes, size_range=self._size_range(), generate=self._generate_config(),
                            device=self.device_combo.currentText(), shapes=self._outline_masks(kind))
        self.status.setText(f"Generating {per_image * len(normals)} samples on {len(normals)} image(s), "
                            f"{per_box} per box…" + (f" {note}" if note else ""))

        def store(folder: Path) -> None:
            workspace.import_generated_folder(name, folder)
            self.studio.edited("generated")
            self.set_combo.setCurrentText(name)
            self.status.setText(f"Generated set '{name}' added: accept or reject its samples below."
                                + (f" {self._generate_note}" if self._generate_note else ""))

        self._generate_job = self.studio.engine.submit(f"Generate '{kind.name}'", run_generate, task, on_result=store)
        self._generate_note = note
        self.update_enabled()
        return self._generate_job

    # ================================================================== gallery
    def _fill_sets(self) -> None:
        project = self.studio.project
        current = self.set_combo.currentText()
        self.set_combo.blockSignals(True)
        self.set_combo.clear()
        if project is not None:
            names = [g.name for g in project.generated_sets]
            self.set_combo.addItems(names)
            if current in names:
                self.set_combo.setCurrentText(current)
            elif names:
                self.set_combo.setCurrentIndex(len(names) - 1)
        self.set_combo.blockSignals(False)
        self._fill_gallery()

    def _current_set(self):
        project = self.studio.project
        name = self.set_combo.currentText()
        if project is None or not name:
            return None
        try:
            return project.generated_set(name)
        except (KeyError, AnoGenError, ValueError):
            return None

    def _caption(self, index: int, sample) -> str:
        mark = {"accepted": "✓", "rejected": "✗"}.get(sample.status, "• to review")
        return f"{mark} #{index} seed {sample.seed}"

    def _fill_gallery(self) -> None:
        generated = self._current_set()
        # Refilling the same set (after a regenerate, a new status) keeps the user's selection.
        keep = self.gallery.selected_keys() if generated is not None and generated.name == self._gallery_set else []
        self._gallery_set = generated.name if generated is not None else None
        self.gallery.blockSignals(True)
        self.gallery.clear()
        self.gallery.blockSignals(False)
        if generated is None:
            self.gallery_info.setText("No generated set yet.")
            self.update_enabled()
            return
        for i, sample in enumerate(generated.samples):
            try:
                image = read_image(self.studio.resolve(sample.image))
            except AnoGenError:
                continue
            self.gallery.add(i, image, self._caption(i, sample), sample.status)
        self._select_samples(keep)
        self._update_gallery_info()
        self.update_enabled()

    def _select_samples(self, keys: list) -> None:
        """Select gallery items without re-selecting them in the Studio."""
        self.gallery.blockSignals(True)
        for n, key in enumerate(keys):
            item = self.gallery.item_for(key)
            if item is None:
                continue
            if n == 0:
                self.gallery.setCurrentItem(item)
            item.setSelected(True)
        self.gallery.blockSignals(False)

    def _selection_changed(self, selection: Selection) -> None:
        # A sample picked in the project tree is the one Accept/Reject/Regenerate act on.
        if selection.kind == "sample" and selection.name == self.set_combo.currentText() \
                and self.gallery.selected_keys() != [selection.index]:
            self.gallery.blockSignals(True)
            self.gallery.clearSelection()
            self.gallery.blockSignals(False)
            self._select_samples([selection.index])
        self.update_enabled()

    def _update_gallery_info(self) -> None:
        generated = self._current_set()
        if generated is None:
            return
        counts = {s: sum(1 for x in generated.samples if x.status == s) for s in ("accepted", "rejected", "pending")}
        used = ("Training uses the accepted ones only: review the others first."
                if self.review_combo.currentIndex() == 1 else
                "Training uses every sample that is not rejected, reviewed or not.")
        self.gallery_info.setText(f"{len(generated.samples)} samples: {counts['accepted']} accepted, "
                                  f"{counts['rejected']} rejected, {counts['pending']} to review. {used} "
                                  "Keys: A accept, X reject, PageDown next.")

    def _sample_clicked(self, index: int) -> None:
        generated = self._current_set()
        if generated is not None:
            self.studio.select(Selection("sample", generated.name, int(index)))
            self.canvas.set_compare_split(self.compare_slider.value() / 100)
        self.update_enabled()

    def _compare_moved(self, split: float) -> None:
        self.compare_slider.blockSignals(True)
        self.compare_slider.setValue(round(split * 100))
        self.compare_slider.blockSignals(False)

    def set_status(self, status: str) -> None:
        """Accept or reject the selected samples (saved at once, in the project and the set)."""
        from anogen.data.generated import read_generated_set, write_manifest

        generated = self._current_set()
        keys = self.gallery.selected_keys()
        workspace = self.studio.workspace
        if generated is None or not keys or workspace is None:
            return
        for index in keys:
            workspace.set_sample_status(generated.name, int(index), status)
        # The set's own manifest (what `anogen train --generated` reads) follows the project.
        folder = workspace.resolve(generated.folder)
        try:
            samples = read_generated_set(folder)
            by_image = {workspace.resolve(s.image).resolve(): s.status for s in generated.samples}
            for sample in samples:
                sample.status = by_image.get(sample.image_path.resolve(), sample.status)
            write_manifest(folder, samples)
        except AnoGenError as exc:
            self.studio.saveFailed.emit(f"Could not update {folder}: {exc}")
        for index in keys:
            item = self.gallery.item_for(index)
            sample = generated.samples[int(index)]
            if item is not None:
                self.gallery.set_status(item, read_image(workspace.resolve(sample.image)),
                                        self._caption(int(index), sample), status)
        self.studio.edited("generated_status")
        self._update_gallery_info()

    def regenerate(self) -> Job | None:
        """Generate the selected sample again with a new seed, replacing it in the set."""
        generated = self._current_set()
        keys = self.gallery.selected_keys()
        workspace = self.studio.workspace
        if generated is None or not keys or workspace is None:
            return None
        index = int(keys[0])
        sample = generated.samples[index]
        try:
            source_rel = workspace.relative(Path(sample.source)) if Path(sample.source).is_absolute() else sample.source
        except AnoGenError:
            source_rel = sample.source
        seed = int(sample.seed) + 1_000_003  # a new, reproducible seed
        task = self._preview_task(source_rel, (sample.box.x0, sample.box.y0, sample.box.x1, sample.box.y1), seed)
        if task is None:
            return None

        def store(result: PreviewResult) -> None:
            sample.seed = result.seed
            sample.status = "pending"
            self.studio.edited("generated")
            self.set_combo.setCurrentText(generated.name)
            selection = Selection("sample", generated.name, index)
            self.studio.select(selection)
            # Same selection, new file: the canvas must reload it rather than keep the old pixels.
            self.controller.show_selection(selection, force=True)
            self.canvas.set_compare_split(self.compare_slider.value() / 100)
            self.status.setText(f"Sample #{index} regenerated with seed {result.seed}.")

        self._regenerate_job = self.studio.engine.submit(
            f"Regenerate sample #{index}", run_regenerate,
            RegenerateTask(task, workspace.resolve(generated.folder), workspace.resolve(sample.image)),
            on_result=store)
        self.update_enabled()
        return self._regenerate_job

    def prepare_for_screenshot(self) -> None:
        generated = self._current_set()
        if generated is not None and generated.samples and self.gallery.count():
            self.gallery.setCurrentRow(0)
