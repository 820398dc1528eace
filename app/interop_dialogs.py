"""File -> Import annotations… and File -> Export generated data…: two small dialogs over
``anogen.data.annotations`` and ``anogen.data.exports`` (the same code as ``anogen import``
and ``anogen export-data``). Presentation only: the library reads, checks and writes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QWidget,
)

from anogen.data.annotations import FORMATS as IMPORT_FORMATS
from anogen.data.exports import FORMATS as EXPORT_FORMATS
from anogen.errors import AnoGenError

if TYPE_CHECKING:
    from app.main_window import MainWindow


def _path_row(parent: QWidget, edit: QLineEdit, *buttons: tuple[str, object]) -> QWidget:
    row = QWidget(parent)
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    for text, slot in buttons:
        button = QPushButton(text, row)
        button.clicked.connect(slot)
        layout.addWidget(button)
    return row


class ImportAnnotationsDialog(QDialog):
    """Format, source (file, folder or .zip), defect kind or label map, optional image folder."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("importAnnotationsDialog")
        self.setWindowTitle("Import annotations")
        self.setMinimumWidth(560)
        self.format = QComboBox(self)
        self.format.addItems(IMPORT_FORMATS)
        self.source = QLineEdit(self)
        self.source.setPlaceholderText("labelme .json or folder, COCO .json, CVAT export folder or .zip")
        self.kind = QLineEdit(self)
        self.kind.setPlaceholderText("a defect kind, or a label map: scratch=scratch,hole=hole")
        self.images = QLineEdit(self)
        self.images.setPlaceholderText("optional: where the images are, when not beside the annotations")
        form = QFormLayout(self)
        form.addRow("Format", self.format)
        form.addRow("Source", _path_row(self, self.source, ("File…", self._pick_file), ("Folder…", self._pick_folder)))
        form.addRow("Defect kind", self.kind)
        form.addRow("Images", _path_row(self, self.images, ("Folder…", self._pick_images)))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Annotation file", "", "Annotations (*.json *.zip)")
        if path:
            self.source.setText(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Annotation folder")
        if path:
            self.source.setText(path)

    def _pick_images(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Image folder")
        if path:
            self.images.setText(path)


class ExportDataDialog(QDialog):
    """Format, the project's generated sets to export (all ticked), output folder."""

    def __init__(self, sets: list[tuple[str, Path]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("exportDataDialog")
        self.setWindowTitle("Export generated data")
        self.setMinimumWidth(560)
        self.format = QComboBox(self)
        self.format.addItems(EXPORT_FORMATS)
        self.sets = QListWidget(self)
        for name, folder in sets:
            item = QListWidgetItem(name, self.sets)
            item.setData(Qt.ItemDataRole.UserRole, str(folder))
            item.setCheckState(Qt.CheckState.Checked)
        self.out = QLineEdit(self)
        self.out.setPlaceholderText("a new or empty folder")
        form = QFormLayout(self)
        form.addRow("Format", self.format)
        form.addRow("Generated sets", self.sets)
        form.addRow("Output folder", _path_row(self, self.out, ("Folder…", self._pick_out)))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def chosen_sets(self) -> list[Path]:
        return [Path(self.sets.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.sets.count())
                if self.sets.item(i).checkState() == Qt.CheckState.Checked]

    def _pick_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.out.setText(path)


def run_import(window: MainWindow, dialog: ImportAnnotationsDialog) -> bool:
    """Import what ``dialog`` names into the open project; errors go to a dialog. True on success."""
    from anogen.data.annotations.importer import LabelMap, import_annotations

    studio = window.studio
    if studio.workspace is None:
        window.show_error("Import annotations", "Open or create a project first.")
        return False
    studio.flush()  # the import saves the manifest: pending GUI writes go first
    text, images = dialog.kind.text().strip(), dialog.images.text().strip()
    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        labels = LabelMap.parse(text) if "=" in text else LabelMap(kind=text or None)
        if labels.kind is None and not labels.table:
            raise AnoGenError("give a defect kind (or a label map such as scratch=scratch,hole=hole)")
        result = import_annotations(studio.workspace, dialog.format.currentText(), dialog.source.text().strip(),
                                    labels, images=images or None)
    except AnoGenError as exc:
        window.show_error("Import annotations", str(exc))
        return False
    finally:
        QApplication.restoreOverrideCursor()
    studio.edited("defects")
    studio.message.emit(f"Imported {result.total} annotated image(s): "
                        + ", ".join(f"{k} {n}" for k, n in result.counts.items()))
    return True


def run_export(window: MainWindow, dialog: ExportDataDialog) -> bool:
    """Export the ticked sets as ``dialog`` says; errors go to a dialog. True on success."""
    from anogen.data.exports import export_sets
    from anogen.outputs import check_output_dir, mark_output_dir

    out, sets = dialog.out.text().strip(), dialog.chosen_sets()
    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        if not out or not sets:
            raise AnoGenError("choose at least one generated set and an output folder")
        check_output_dir(out, "export-data", inputs=sets)
        counts = export_sets(dialog.format.currentText(), sets, out)
        mark_output_dir(out, "export-data", format=dialog.format.currentText())
    except AnoGenError as exc:
        window.show_error("Export generated data", str(exc))
        return False
    finally:
        QApplication.restoreOverrideCursor()
    window.studio.message.emit(f"Exported {counts.get('samples', 0)} samples as {dialog.format.currentText()} "
                               f"to {out}")
    return True


def import_annotations_dialog(window: MainWindow) -> None:
    dialog = ImportAnnotationsDialog(window)
    if dialog.exec() == QDialog.DialogCode.Accepted:
        run_import(window, dialog)


def export_data_dialog(window: MainWindow) -> None:
    workspace = window.studio.workspace
    if workspace is None or not workspace.project.generated_sets:
        window.show_error("Export generated data", "The open project has no generated set yet.")
        return
    sets = [(g.name, workspace.resolve(g.folder)) for g in workspace.project.generated_sets]
    dialog = ExportDataDialog(sets, window)
    if dialog.exec() == QDialog.DialogCode.Accepted:
        run_export(window, dialog)
