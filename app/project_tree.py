"""The project tree: defect kinds with their support images and embeddings, good images,
generated sets with their samples, detectors. Selecting a row selects it in the Studio."""

from __future__ import annotations

from pathlib import PurePosixPath

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QTreeWidget, QTreeWidgetItem, QTreeWidgetItemIterator, QVBoxLayout, QWidget

from app.icons import icon
from app.studio import Selection, Studio

SELECTION_ROLE = Qt.ItemDataRole.UserRole + 1
TESTS_KEY = "test_results"  # app.results_record.VIEW_KEY (not imported: that module loads numpy)
MAX_SAMPLE_ROWS = 500  # a set with more samples lists the first ones; the gallery shows all
IMAGE_ROWS = ("support", "good", "sample")  # the rows next/previous image steps through

# Which image rows each filter keeps (the other image rows are hidden; groups stay).
FILTERS: dict[str, str] = {
    "all": "All images",
    "unmasked": "Unmasked support images only",
    "masked": "Masked support images only",
    "no_boxes": "Good images without boxes",
    "boxes": "Good images with boxes",
    "to_review": "Samples to review",
}


class ProjectTree(QTreeWidget):
    def __init__(self, studio: Studio, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.setObjectName("projectTree")
        self.setHeaderHidden(True)
        self.setUniformRowHeights(True)
        self.setExpandsOnDoubleClick(True)
        self._items: dict[Selection, QTreeWidgetItem] = {}
        self._updating = False
        self._filter = "all"
        self._row_state: dict[Selection, str] = {}  # image row -> masked/unmasked/boxes/no_boxes/pending/...
        self.currentItemChanged.connect(self._current_changed)
        studio.projectChanged.connect(self.rebuild)
        studio.projectEdited.connect(lambda _area: self.rebuild())
        studio.selectionChanged.connect(self._select_quietly)

    def _add(self, parent: QTreeWidgetItem | None, text: str, selection: Selection, icon_name: str,
             tooltip: str = "") -> QTreeWidgetItem:
        item = QTreeWidgetItem([text])
        item.setIcon(0, icon(icon_name))
        item.setData(0, SELECTION_ROLE, selection)
        if tooltip:
            item.setToolTip(0, tooltip)
        if parent is None:
            self.addTopLevelItem(item)
        else:
            parent.addChild(item)
        self._items[selection] = item
        return item

    def rebuild(self) -> None:
        expanded = {sel for sel, item in self._items.items() if item.isExpanded()}
        previous = set(self._items)
        self._updating = True
        self.clear()
        self._items = {}
        self._row_state = {}
        project = self.studio.project
        if project is None:
            self._updating = False
            return
        kinds = self._add(None, f"Defect kinds ({len(project.defect_kinds)})", Selection("defect_kinds"), "defect")
        for kind in project.defect_kinds:
            shots = len(kind.support)
            masked = sum(1 for s in kind.support if s.mask)
            node = self._add(kinds, f"{kind.name}  ·  {masked}/{shots} masked", Selection("defect_kind", kind.name),
                             "defect", f"token {kind.token}")
            for i, support in enumerate(kind.support):
                name = PurePosixPath(support.image).name
                self._add(node, name + ("" if support.mask else "  (no mask)"), Selection("support", kind.name, i),
                          "image", support.image)
                self._row_state[Selection("support", kind.name, i)] = "masked" if support.mask else "unmasked"
            if kind.embedding:
                self._add(node, f"embedding {PurePosixPath(kind.embedding).name}",
                          Selection("embedding", kind.name), "embedding", kind.embedding)
        goods = self._add(None, f"Good images ({len(project.good_images)})", Selection("goods"), "good")
        for good in project.good_images:
            boxes = f"  ·  {len(good.boxes)} box{'es' if len(good.boxes) != 1 else ''}" if good.boxes else ""
            self._add(goods, PurePosixPath(good.image).name + boxes, Selection("good", good.image), "image", good.image)
            self._row_state[Selection("good", good.image)] = "boxes" if good.boxes else "no_boxes"
        sets = self._add(None, f"Generated sets ({len(project.generated_sets)})", Selection("generated_sets"),
                         "generated")
        for generated in project.generated_sets:
            accepted = sum(1 for s in generated.samples if s.status == "accepted")
            rejected = sum(1 for s in generated.samples if s.status == "rejected")
            node = self._add(sets, f"{generated.name}  ·  {len(generated.samples)} ({accepted}✓ {rejected}✗)",
                             Selection("generated_set", generated.name), "generated")
            for i, sample in enumerate(generated.samples[:MAX_SAMPLE_ROWS]):
                mark = {"accepted": "✓ ", "rejected": "✗ "}.get(sample.status, "• ")
                self._add(node, mark + PurePosixPath(sample.image).name, Selection("sample", generated.name, i),
                          "image", "to review" if sample.status == "pending" else sample.status)
                self._row_state[Selection("sample", generated.name, i)] = (
                    "to_review" if sample.status == "pending" else sample.status)
        detectors = self._add(None, f"Detectors ({len(project.detectors)})", Selection("detectors"), "detector")
        tests = project.view.get(TESTS_KEY)
        for detector in project.detectors:
            # Say which AUROC: the last Test's on the test set, else the validation score of training.
            test = tests.get(detector.name) if isinstance(tests, dict) else None
            tested = test.get("metrics", {}).get("image_auroc") if isinstance(test, dict) else None
            auroc = detector.metrics.get("image_auroc")
            extra = (f"  ·  test AUROC {tested:.3f}" if isinstance(tested, (int, float)) else
                     f"  ·  val AUROC {auroc:.3f}" if auroc is not None else "")
            self._add(detectors, f"{detector.name} ({detector.detector}){extra}", Selection("detector", detector.name),
                      "detector", detector.folder)
        groups = ("defect_kinds", "defect_kind", "goods", "generated_sets", "detectors")
        for selection, item in self._items.items():
            is_new = selection not in previous
            item.setExpanded(selection in expanded or (is_new and selection.kind in groups))
        self._apply_filter()
        self._select_quietly(self.studio.selection)
        self._updating = False

    # ------------------------------------------------------------------ filter
    def set_filter(self, name: str) -> None:
        """Show only the image rows ``name`` (a key of :data:`FILTERS`) keeps."""
        self._filter = name if name in FILTERS else "all"
        self._apply_filter()

    def filter(self) -> str:
        return self._filter

    def _apply_filter(self) -> None:
        for selection, item in self._items.items():
            if selection.kind in IMAGE_ROWS:
                keep = self._filter == "all" or self._row_state.get(selection) == self._filter
                item.setHidden(not keep)

    # ------------------------------------------------------------------ next / previous
    def image_rows(self) -> list[Selection]:
        """The image rows the filter shows, top to bottom."""
        rows = []
        iterator = QTreeWidgetItemIterator(self, QTreeWidgetItemIterator.IteratorFlag.NotHidden)
        while iterator.value() is not None:
            selection = iterator.value().data(0, SELECTION_ROLE)
            if isinstance(selection, Selection) and selection.kind in IMAGE_ROWS:
                rows.append(selection)
            iterator += 1
        return rows

    def step_image(self, delta: int) -> Selection | None:
        """Select the next (``delta`` 1) or previous (-1) image row below or above the
        current row; from a group row, its first image. Returns what was selected."""
        rows = self.image_rows()
        if not rows:
            return None
        current = self.studio.selection
        if current in rows:
            index = rows.index(current) + delta
        else:
            # A group row (a kind, "Good images"...): the first image row after it, or the
            # last one before it. ``_items`` is in tree order.
            order = {selection: n for n, selection in enumerate(self._items)}
            here = order.get(current, -1)
            after = [n for n, row in enumerate(rows) if order[row] > here]
            index = (after[0] if after else len(rows)) - (0 if delta > 0 else 1)
        if not 0 <= index < len(rows):
            return None  # already at the first or last image: stay
        self.studio.select(rows[index])
        return rows[index]

    def _select_quietly(self, selection: Selection) -> None:
        item = self._items.get(selection)
        was = self._updating
        self._updating = True
        if item is not None:
            self.setCurrentItem(item)
            self.scrollToItem(item)
        self._updating = was

    def _current_changed(self, current: QTreeWidgetItem | None, _previous) -> None:
        if self._updating or current is None:
            return
        selection = current.data(0, SELECTION_ROLE)
        if isinstance(selection, Selection) and selection != self.studio.selection:
            self.studio.select(selection)


class ProjectPane(QWidget):
    """The project tree with the image filter above it."""

    def __init__(self, tree: ProjectTree, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = tree
        self.filter_combo = QComboBox()
        self.filter_combo.setObjectName("imageFilter")
        self.filter_combo.setToolTip("Show only some images, e.g. the ones still to mask; "
                                     "next/previous image (PageDown/PageUp) follows the filter")
        for key, text in FILTERS.items():
            self.filter_combo.addItem(icon("filter"), text, key)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.filter_combo)
        layout.addWidget(tree, 1)
        self.filter_combo.currentIndexChanged.connect(lambda _i: tree.set_filter(self.filter_combo.currentData()))
