"""Puts the selected project item on the canvas and saves what the user edits there.

* a support image: the photo with its mask, editable; each finished stroke is written as
  the mask PNG (on the save thread) and the manifest is saved;
* a good image: the photo with its boxes, editable; every change is saved at once;
* a generated sample: before/after compare with the source image, box outlined;
* panels can show any image with a heat map (test images of a detector) or a compare.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QObject, Signal

from anogen.data.box import Box
from anogen.data.imageio import read_image, read_mask
from anogen.errors import AnoGenError
from app.canvas import ImageCanvas, Tool
from app.studio import Selection, Studio

log = logging.getLogger(__name__)


# Tree headers without an image, and what the canvas says when the group is empty.
GROUP_HEADERS = {
    "project": "Pick a support image, a good image or a sample in the project tree.",
    "defect_kinds": "No defect kind yet: add one (Ctrl+K).",
    "goods": "No good images yet: link a dataset with good images (Train panel).",
    "generated_sets": "No generated set yet: generate samples in the Generate panel.",
    "generated_set": "This set has no samples.",
}


def _first_item(project, header: Selection) -> Selection | None:
    """What selecting ``header`` shows: its group's first item with an image."""
    if header.kind == "defect_kinds" and project.defect_kinds:
        return Selection("defect_kind", project.defect_kinds[0].name)
    if header.kind == "goods" and project.good_images:
        return Selection("good", project.good_images[0].image)
    if header.kind == "generated_set":
        generated = project.generated_set(header.name)
        return Selection("sample", generated.name, 0) if generated.samples else None
    if header.kind == "generated_sets" and project.generated_sets and project.generated_sets[0].samples:
        return Selection("sample", project.generated_sets[0].name, 0)
    return None


class CanvasController(QObject):
    shown = Signal(object)  # the Selection (or None for panel content) now on the canvas

    def __init__(self, studio: Studio, canvas: ImageCanvas, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.canvas = canvas
        self.current: Selection | None = None
        studio.selectionChanged.connect(self.show_selection)
        studio.projectChanged.connect(self._project_changed)
        canvas.maskEdited.connect(self._mask_edited)
        canvas.boxesEdited.connect(self._boxes_edited)
        canvas.zoomChanged.connect(lambda _z: self._remember_view())

    # ------------------------------------------------------------------ showing
    def _project_changed(self) -> None:
        self.current = None
        self.canvas.set_image(None)
        self.canvas.set_placeholder("")

    def show_selection(self, selection: Selection, force: bool = False) -> None:
        """Show ``selection``; re-selecting what is shown keeps the canvas (and its undo history)."""
        workspace = self.studio.workspace
        if workspace is None:
            return
        if not force and selection == self.current and self.canvas.has_image():
            return
        project = workspace.project
        try:
            if selection.kind in GROUP_HEADERS:
                # A header has no image of its own: show its first item, or nothing. Keeping
                # the last image would let a stroke edit something the tree no longer shows.
                first = _first_item(project, selection)
                if first is None:
                    self.show_nothing(selection, GROUP_HEADERS[selection.kind])
                    return
                selection = first
                if not force and selection == self.current and self.canvas.has_image():
                    return
            if selection.kind in ("defect_kind", "embedding"):
                kind = project.defect_kind(selection.name)
                if not kind.support:
                    # Keeping the previous kind's image here would let the next stroke edit
                    # that kind's mask while the panels show this one: show nothing instead.
                    self.show_nothing(selection, f"'{kind.name}' has no support images yet.\n"
                                                  "Import photos of this defect (Ctrl+I) or drop them on the "
                                                  "Defects panel.")
                    return
                selection = Selection("support", kind.name, 0)
                if not force and selection == self.current and self.canvas.has_image():
                    return
            if selection.kind == "support":
                self._show_support(selection)
            elif selection.kind == "good":
                self._show_good(selection)
            elif selection.kind == "sample":
                self._show_sample(selection)
            else:
                return
        except (AnoGenError, KeyError, IndexError, ValueError) as exc:
            log.warning("cannot show %s: %s", selection, exc)
            self.studio.message.emit(f"Cannot show {selection.name}: {exc}")
            return
        self.current = selection
        state = self.studio.view_state().get("canvas")
        if isinstance(state, dict) and state.get("for") == selection.to_json():
            self.canvas.restore_view_state(state)
        self.shown.emit(selection)

    def show_nothing(self, selection: Selection | None, placeholder: str) -> None:
        """An empty, non-editable canvas, for a selection without an image or one just removed."""
        self.canvas.set_image(None)
        self.canvas.set_placeholder(placeholder)
        self.current = selection
        self.shown.emit(selection)

    def _show_support(self, selection: Selection) -> None:
        kind = self.studio.project.defect_kind(selection.name)
        support = kind.support[selection.index]
        image = read_image(self.studio.resolve(support.image))
        mask = read_mask(self.studio.resolve(support.mask)) if support.mask else None
        self.canvas.set_image(image)
        self.canvas.set_mask(mask, editable=True)
        if self.canvas.tool() not in (Tool.BRUSH, Tool.ERASER, Tool.FILL, Tool.POLYGON):
            self.canvas.set_tool(Tool.BRUSH)  # panning stays at hand with Space or the middle button

    def _show_good(self, selection: Selection) -> None:
        good = self.studio.project.good_image(selection.name)
        image = read_image(self.studio.resolve(good.image))
        self.canvas.set_image(image)
        self.canvas.set_boxes([(b.x0, b.y0, b.x1, b.y1) for b in good.boxes], editable=True,
                              labels=[b.defect_kind for b in good.boxes])
        self.canvas.set_tool(Tool.BOX)

    def _show_sample(self, selection: Selection) -> None:
        generated = self.studio.project.generated_set(selection.name)
        sample = generated.samples[selection.index]
        after = read_image(self.studio.resolve(sample.image))
        before = self._source_image(sample.source, after.shape)
        self.show_compare(before, after, [(sample.box.x0, sample.box.y0, sample.box.x1, sample.box.y1)])

    def _source_image(self, source: str, shape: Sequence[int]) -> np.ndarray:
        """The good image a sample came from, or a grey frame when it is gone."""
        from pathlib import Path

        candidates = []
        try:
            candidates.append(self.studio.resolve(source))
        except AnoGenError:
            pass
        candidates.append(Path(source))
        for path in candidates:
            if path.is_file():
                image = read_image(path)
                if image.shape == tuple(shape):
                    return image
        return np.full(tuple(shape), 128, np.uint8)

    def show_image(self, rgb: np.ndarray, heat: np.ndarray | None = None, *, threshold: float = 0.5,
                   opacity: float = 0.5, boxes: Sequence[Sequence[int]] = ()) -> None:
        """Panel content: an image, optionally with a heat map and read-only boxes."""
        self.current = None
        self.canvas.set_image(rgb)
        if heat is not None:
            self.canvas.set_heatmap(heat, opacity=opacity, threshold=threshold)
        if boxes:
            self.canvas.set_boxes(boxes, editable=False)
        if self.canvas.tool() != Tool.PAN:
            self.canvas.set_tool(Tool.PAN)
        self.shown.emit(None)

    def show_compare(self, before: np.ndarray, after: np.ndarray, boxes: Sequence[Sequence[int]] = (),
                     split: float = 0.5) -> None:
        self.current = None
        self.canvas.set_image(after)
        self.canvas.set_compare(before, after, split)
        if boxes:
            self.canvas.set_boxes(boxes, editable=False)
        self.canvas.set_tool(Tool.PAN)
        self.shown.emit(None)

    # ------------------------------------------------------------------ saving edits
    def _mask_edited(self, mask: np.ndarray) -> None:
        selection = self.current
        workspace = self.studio.workspace
        if workspace is None or selection is None or selection.kind != "support":
            return
        kind, index = selection.name, selection.index

        def write() -> str:
            return workspace.write_support_mask(kind, index, mask)

        self.studio.write_in_background(f"mask:{kind}:{index}", write,
                                        done=lambda _rel: self.studio.projectEdited.emit("defects"))

    def _boxes_edited(self, boxes: list) -> None:
        selection = self.current
        workspace = self.studio.workspace
        if workspace is None or selection is None or selection.kind != "good":
            return
        labels = self.canvas.box_labels()
        try:
            workspace.set_boxes(selection.name, [Box(x0, y0, x1, y1, defect_kind=label)
                                                 for (x0, y0, x1, y1), label in zip(boxes, labels)])
        except AnoGenError as exc:
            self.studio.saveFailed.emit(str(exc))
            return
        self.studio.edited("good")

    def _remember_view(self) -> None:
        if self.current is not None and self.studio.workspace is not None:
            state = self.canvas.view_state()
            state["for"] = self.current.to_json()
            self.studio.update_view(canvas=state)

    def remember_view(self) -> None:
        self._remember_view()
