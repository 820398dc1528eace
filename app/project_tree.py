"""The project tree: defect kinds with their support images and embeddings, good images,
generated sets with their samples, detectors. Selecting a row selects it in the Studio."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem, QWidget

from app.icons import icon
from app.studio import Selection, Studio

SELECTION_ROLE = Qt.ItemDataRole.UserRole + 1
TESTS_KEY = "test_results"  # app.results_record.VIEW_KEY (not imported: that module loads numpy)
MAX_SAMPLE_ROWS = 500  # a set with more samples lists the first ones; the gallery shows all


class ProjectTree(QTreeWidget):
    def __init__(self, studio: Studio, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.studio = studio
        self.setObjectName("projectTree")
        self.setHeaderHidden(True)
        self.setUniformRowHeights(True)
        self.setExpandsOnDoubleClick(True)
        self._items: dict[Selection, QTreeWidgetItem] = {}
        self._updating = False
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
            if kind.embedding:
                self._add(node, f"embedding {PurePosixPath(kind.embedding).name}",
                          Selection("embedding", kind.name), "embedding", kind.embedding)
        goods = self._add(None, f"Good images ({len(project.good_images)})", Selection("goods"), "good")
        for good in project.good_images:
            boxes = f"  ·  {len(good.boxes)} box{'es' if len(good.boxes) != 1 else ''}" if good.boxes else ""
            self._add(goods, PurePosixPath(good.image).name + boxes, Selection("good", good.image), "image", good.image)
        sets = self._add(None, f"Generated sets ({len(project.generated_sets)})", Selection("generated_sets"), "generated")
        for generated in project.generated_sets:
            accepted = sum(1 for s in generated.samples if s.status == "accepted")
            rejected = sum(1 for s in generated.samples if s.status == "rejected")
            node = self._add(sets, f"{generated.name}  ·  {len(generated.samples)} ({accepted}✓ {rejected}✗)",
                             Selection("generated_set", generated.name), "generated")
            for i, sample in enumerate(generated.samples[:MAX_SAMPLE_ROWS]):
                mark = {"accepted": "✓ ", "rejected": "✗ "}.get(sample.status, "")
                self._add(node, mark + PurePosixPath(sample.image).name, Selection("sample", generated.name, i), "image")
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
        self._select_quietly(self.studio.selection)
        self._updating = False

    def _select_quietly(self, selection: Selection) -> None:
        item = self._items.get(selection)
        was = self._updating
        self._updating = True
        if item is not None:
            self.setCurrentItem(item)
            self.scrollToItem(item)
        self._updating = was

    def _current_changed(self, current: Optional[QTreeWidgetItem], _previous) -> None:  # noqa: ANN001
        if self._updating or current is None:
            return
        selection = current.data(0, SELECTION_ROLE)
        if isinstance(selection, Selection) and selection != self.studio.selection:
            self.studio.select(selection)
