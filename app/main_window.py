"""The main window: project tree (left), canvas (centre), task panels (right), job area
(bottom), status bar; menus whose every action has a shortcut (Help -> Shortcuts)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import shiboken6
from PySide6.QtCore import QStandardPaths, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolBar,
    QWidget,
)

from anogen.data.workspace import Workspace
from anogen.errors import AnoGenError
from app import theme
from app.canvas import ImageCanvas, Tool
from app.canvas_controller import CanvasController
from app.dialogs import ShortcutsDialog, show_error
from app.engine import JobEngine
from app.icons import icon
from app.interop_dialogs import export_data_dialog, import_annotations_dialog
from app.job_area import JobArea
from app.project_tree import ProjectPane, ProjectTree
from app.relink import relink_moved_datasets
from app.settings import Settings
from app.studio import Selection, Studio
from app.widgets.start_page import StartPage
from app.widgets.view_controls import ViewControls
from app.widgets.wheel_guard import guard_wheel

log = logging.getLogger(__name__)

APP_TITLE = "AnoGen Studio"
DEMO_CATEGORY = "fabric"
DEMO_SHOTS = 3
PANEL_NAMES = ("defects", "generate", "train")
_DOCK_FEATURES = QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable


def demo_model_folder() -> Path | None:
    """The embedded demo model, wherever :mod:`anogen.resources` finds it (checkout, installed
    wheel, frozen app), or None when it is not installed."""
    from anogen.resources import DEMO_MODEL, resource_path

    folder = resource_path(*DEMO_MODEL)
    return folder if folder.is_dir() else None


def default_demo_folder() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
    return Path(base or tempfile.gettempdir()) / "demo-project"


def build_demo_project(folder: Path, progress, cancel: threading.Event) -> Path:
    """Write the demo dataset and make a project from it (a job function: runs off the UI thread).

    The project links the dataset's ``fabric`` category (its good images become the
    project's), gets one defect kind per demo defect with ``DEMO_SHOTS`` masked support
    images from the test split, and uses the embedded demo model when it is installed.
    """
    from anogen.data.demo import DEFECT_KINDS, write_demo_dataset
    from anogen.data.imageio import list_images
    from anogen.demo_pipeline import SUBJECTS, DemoPlan
    from anogen.jobs import Progress, check_cancel

    folder = Path(folder)
    # The dataset lives inside the project folder, so the demo project zips and moves as one.
    workspace = Workspace.create(folder, f"Demo ({DEMO_CATEGORY})")
    dataset = folder / "dataset"
    write_demo_dataset(dataset, categories=(DEMO_CATEGORY,), progress=progress, cancel=cancel)
    check_cancel(cancel)
    progress(Progress(0, 1, "building the project"))
    category = dataset / DEMO_CATEGORY
    workspace.link_dataset(category)
    for kind_name in DEFECT_KINDS[DEMO_CATEGORY]:
        check_cancel(cancel)
        workspace.add_defect_kind(kind_name, init_word=kind_name)
        for image in list_images(category / "test" / kind_name)[:DEMO_SHOTS]:
            mask = category / "ground_truth" / kind_name / f"{image.stem}_mask.png"
            workspace.add_support_image(kind_name, image, mask if mask.is_file() else None)
    model = demo_model_folder()
    if model is not None:
        workspace.project.model = str(model)
    workspace.project.view["panel"] = "defects"
    workspace.project.view["foreground"] = "all"  # fabric is a texture: every pixel is surface
    # Learn (and so paint) at the size the demo measured best for this model and data, with
    # the demo's captions.
    plan = DemoPlan.quick()
    workspace.project.view["settings"] = {"defects": {
        "resolution": plan.model_resolution or 0,
        "subject": SUBJECTS[DEMO_CATEGORY] if plan.subject_captions else ""}}
    workspace.save()
    progress(Progress(1, 1, "demo project ready"))
    return folder


class MainWindow(QMainWindow):
    _deviceDetected = Signal(str)  # from the detection thread to the status bar

    def __init__(self, settings: Settings | None = None, *, restore_geometry: bool = True,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or Settings()
        self.engine = JobEngine(self)
        self.studio = Studio(self.settings, self.engine, self)
        self.canvas = ImageCanvas(self)
        self.canvas.setObjectName("canvas")
        self.canvas.set_brush_radius(self.settings.brush_radius)
        self.canvas.set_mask_opacity(self.settings.mask_opacity)
        self.controller = CanvasController(self.studio, self.canvas, self)
        # The first screen stands in for the empty canvas until a project is open.
        self.start_page = StartPage()
        # The canvas above, and under it the generated samples or the test images with room
        # to read them (they were squeezed at the bottom of the scrolling task panel).
        self.work_area = QSplitter(Qt.Orientation.Vertical)
        self.work_area.setObjectName("workArea")
        self.work_area.addWidget(self.canvas)
        self.results_tabs = QTabWidget()
        self.results_tabs.setObjectName("resultsTabs")
        self.results_tabs.setDocumentMode(True)
        self.work_area.addWidget(self.results_tabs)
        self.work_area.setCollapsible(0, False)
        self.work_area.setStretchFactor(0, 3)
        self.work_area.setStretchFactor(1, 2)
        self.centre = QStackedWidget()
        self.centre.addWidget(self.start_page)
        self.centre.addWidget(self.work_area)
        self.setCentralWidget(self.centre)
        self.setDockNestingEnabled(True)
        self._shortcut_rows: list[tuple[str, str, str]] = []
        self._error_boxes: list[QMessageBox] = []
        self.confirm_close = True  # ask before quitting while a job runs (off for --screenshot)

        self._build_docks()
        self._build_actions()
        self._build_status_bar()
        self._connect()
        self.setWindowIcon(icon("defect"))
        self.resize(1440, 900)
        if restore_geometry:
            geometry = self.settings.window_geometry()
            if geometry is not None:
                self.restoreGeometry(geometry)
            state = self.settings.window_state()
            if state is not None:
                self.restoreState(state)
        self.show_panel(self.settings.last_panel)
        self._update_title()
        QTimer.singleShot(300, self._detect_device)

    # ================================================================== layout
    def _build_docks(self) -> None:
        from app.panels.defects import DefectsPanel
        from app.panels.generate import GeneratePanel
        from app.panels.train import TrainPanel

        self.tree = ProjectTree(self.studio)
        left = QDockWidget("Project", self)
        left.setObjectName("projectDock")
        self.project_pane = ProjectPane(self.tree)
        left.setWidget(self.project_pane)
        left.setFeatures(_DOCK_FEATURES)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, left)

        generate = GeneratePanel(self.studio, self.controller)
        train = TrainPanel(self.studio, self.controller)
        self.panels = {"defects": DefectsPanel(self.studio, self.controller), "generate": generate, "train": train}
        for panel in self.panels.values():
            guard_wheel(panel)  # scrolling the panel never moves a threshold or an opacity
        self.results_tabs.addTab(generate.results_pane, icon("generated"), "Generated samples")
        self.results_tabs.addTab(train.results_pane, icon("heatmap"), "Test images and heat maps")
        for pane in (generate.results_pane, train.results_pane):
            guard_wheel(pane)
        self.results_tabs.setVisible(False)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("panelTabs")
        self.tabs.setDocumentMode(True)
        for number, (name, panel) in enumerate(self.panels.items(), start=1):
            self.tabs.addTab(panel, icon({"defects": "defect", "generate": "generated", "train": "detector"}[name]),
                             f"{number} {panel.title}")
        right = QDockWidget("Task", self)
        right.setObjectName("taskDock")
        right.setWidget(self.tabs)
        right.setFeatures(_DOCK_FEATURES)
        right.setMinimumWidth(380)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, right)

        self.job_area = JobArea(self.engine, self.settings)  # it applies the CPU threads setting to the engine
        bottom = QDockWidget("Jobs", self)
        bottom.setObjectName("jobDock")
        bottom.setWidget(self.job_area)
        bottom.setFeatures(_DOCK_FEATURES)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, bottom)
        self.resizeDocks([left, right], [260, 420], Qt.Orientation.Horizontal)
        self.resizeDocks([bottom], [120], Qt.Orientation.Vertical)
        self.docks = {"project": left, "task": right, "jobs": bottom}

    def _action(self, menu: QMenu, text: str, shortcut: str | QKeySequence | list, slot: Callable,
                icon_name: str = "", checkable: bool = False, tip: str = "") -> QAction:
        action = QAction(icon(icon_name) if icon_name else QIcon(), text, self)
        shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
        action.setShortcuts([QKeySequence(s) for s in shortcuts])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setCheckable(checkable)
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(f"{tip} ({QKeySequence(shortcuts[0]).toString(QKeySequence.SequenceFormat.NativeText)})")
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        keys = ", ".join(QKeySequence(s).toString(QKeySequence.SequenceFormat.NativeText) for s in shortcuts)
        self._shortcut_rows.append((menu.title().replace("&", ""), text.replace("&", "").rstrip("."), keys))
        return action

    def _build_actions(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&New project...", "Ctrl+N", self.new_project, "new")
        self._action(file_menu, "&Open project...", "Ctrl+O", self.open_project_dialog, "open")
        self.recent_menu = file_menu.addMenu(icon("recent"), "Open &recent")
        self._action(file_menu, "Open &demo project", "Ctrl+Shift+D", lambda: self.open_demo_project(), "demo")
        file_menu.addSeparator()
        self._action(file_menu, "&Import annotations...", "Ctrl+Shift+I", lambda: import_annotations_dialog(self),
                     "import", tip="Support masks from labelme, COCO or CVAT files")
        self._action(file_menu, "E&xport generated data...", "Ctrl+Alt+E", lambda: export_data_dialog(self),
                     "export", tip="Generated sets as an anomalib, COCO, YOLO or MVTec AD dataset")
        file_menu.addSeparator()
        self._action(file_menu, "&Save", "Ctrl+S", self.studio.save, "save")
        self._action(file_menu, "&Close project", "Ctrl+W", self.close_project)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", "Ctrl+Q", self.close, "quit")
        self._shortcut_rows.append(("File", "Open recent project 1-9", "Ctrl+Alt+1 ... Ctrl+Alt+9"))
        self._rebuild_recent_menu()

        edit = bar.addMenu("&Edit")
        self.undo_action = self._action(edit, "&Undo", "Ctrl+Z", self.canvas.undo, "undo")
        self.redo_action = self._action(edit, "&Redo", ["Ctrl+Shift+Z", "Ctrl+Y"], self.canvas.redo, "redo")
        edit.addSeparator()
        self._action(edit, "C&lear mask", "Ctrl+Shift+X", self.canvas.clear_mask, "clear")
        self._action(edit, "&Delete selected boxes", ["Del", "Backspace"], self.canvas.delete_selected_boxes, "delete")
        self.undo_action.setEnabled(False)
        self.redo_action.setEnabled(False)

        tools = bar.addMenu("&Tools")
        self.tool_actions: dict[Tool, QAction] = {}
        group = QActionGroup(self)
        for tool, text, key, name in ((Tool.PAN, "&Pan", "H", "pan"), (Tool.BRUSH, "&Brush", "B", "brush"),
                                      (Tool.ERASER, "&Eraser", "E", "eraser"), (Tool.FILL, "&Fill region", "G", "fill"),
                                      (Tool.POLYGON, "Po&lygon", "P", "polygon"), (Tool.BOX, "B&ox", "R", "box")):
            action = self._action(tools, text, key, lambda _c=False, t=tool: self.canvas.set_tool(t), name,
                                  checkable=True, tip=f"{text.replace('&', '')} tool")
            group.addAction(action)
            self.tool_actions[tool] = action
        self.tool_actions[Tool.PAN].setChecked(True)
        tools.addSeparator()
        self._action(tools, "Bigger brush", "]", self.canvas.grow_brush, "add")
        self._action(tools, "Smaller brush", "[", self.canvas.shrink_brush, "remove")
        self._shortcut_rows.append(("Tools", "Brush size", "Ctrl+Wheel"))

        view = bar.addMenu("&View")
        self._action(view, "&Fit image", ["F", "Ctrl+0"], self.canvas.fit, "fit")
        self._action(view, "&Actual size (1:1)", ["1", "Ctrl+Alt+0"], self.canvas.actual_size, "actual-size")
        self._action(view, "Zoom &in", ["Ctrl++", "Ctrl+="], lambda: self.canvas.zoom_by(1.25), "zoom-in")
        self._action(view, "Zoom &out", "Ctrl+-", lambda: self.canvas.zoom_by(0.8), "zoom-out")
        view.addSeparator()
        # Application-wide: they work whatever has focus (a spin box, the tree, a floating dock).
        for text, keys, delta, name in (("&Next image", ["PgDown", "Ctrl+Right"], 1, "next"),
                                        ("&Previous image", ["PgUp", "Ctrl+Left"], -1, "previous")):
            action = self._action(view, text, keys, lambda _c=False, d=delta: self.tree.step_image(d), name,
                                  tip=f"{text.replace('&', '')} in the project list (follows its filter)")
            action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.view_controls = ViewControls(self.canvas, self.settings)
        self.mask_action = self._action(view, "Show &mask", "M", self.view_controls.toggle_mask, "mask",
                                        tip="Show or hide the mask overlay")
        view.addSeparator()
        self._action(view, "Next &theme (auto, light, dark)", "Ctrl+Shift+T", self.cycle_theme)
        self._shortcut_rows.append(("View", "Zoom around the cursor", "Wheel"))
        self._shortcut_rows.append(("View", "Pan", "Space+drag, middle drag"))

        panels = bar.addMenu("&Panels")
        for number, name in enumerate(PANEL_NAMES, start=1):
            self._action(panels, f"&{number} {self.panels[name].title}", f"Ctrl+{number}",
                         lambda _c=False, n=name: self.show_panel(n))
        panels.addSeparator()
        run = bar.addMenu("&Run")
        for panel in self.panels.values():
            for action in panel.menu_actions():
                run.addAction(action)
                self.addAction(action)
                self._shortcut_rows.append(("Run", action.text().replace("&", ""),
                                            ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText)
                                                      for k in action.shortcuts())))
            run.addSeparator()
        self.cancel_action = self._action(run, "&Cancel job", ["Ctrl+.", "Ctrl+Break"], lambda: self.engine.cancel(),
                                          "cancel")

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&Keyboard shortcuts", ["F1", "Ctrl+/"], self.show_shortcuts, "keyboard")
        self._action(help_menu, "&About AnoGen Studio", "Shift+F1", self.show_about, "help")

        toolbar = QToolBar("Tools", self)
        toolbar.setObjectName("toolsToolbar")
        toolbar.setMovable(False)
        for tool in Tool:
            toolbar.addAction(self.tool_actions[tool])
        toolbar.addSeparator()
        toolbar.addAction(self.undo_action)
        toolbar.addAction(self.redo_action)
        toolbar.addSeparator()
        for action in self.findChildren(QAction):
            if action.text() in ("&Fit image", "&Actual size (1:1)"):
                toolbar.addAction(action)
        self.brush_label = QLabel()
        self.brush_label.setObjectName("brushLabel")
        self.brush_label.setContentsMargins(8, 0, 8, 0)
        toolbar.addSeparator()
        toolbar.addWidget(self.brush_label)
        toolbar.addSeparator()
        toolbar.addWidget(self.view_controls)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.device_label = QLabel("Device: …")
        self.memory_label = QLabel("")
        self.cursor_label = QLabel("")
        self.zoom_label = QLabel("")
        self.area_label = QLabel("")
        for label in (self.cursor_label, self.area_label, self.zoom_label, self.memory_label, self.device_label):
            label.setContentsMargins(6, 0, 6, 0)
            status.addPermanentWidget(label)
        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(2000)
        self._memory_timer.timeout.connect(self._update_memory)
        self._memory_timer.start()
        self._update_memory()

    def _connect(self) -> None:
        self.studio.projectChanged.connect(self._project_changed)
        self.studio.dirtyChanged.connect(lambda _d: self._update_title())
        self.studio.saveFailed.connect(lambda message: self.show_error("Save failed", message))
        self.studio.message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.canvas.message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.canvas.historyChanged.connect(self._history_changed)
        self.canvas.toolChanged.connect(self._tool_changed)
        self.canvas.brushRadiusChanged.connect(self._brush_changed)
        self.canvas.cursorMoved.connect(self._cursor_moved)
        self.canvas.zoomChanged.connect(lambda z: self.zoom_label.setText(f"Zoom {z * 100:.0f} %"))
        self.canvas.maskAreaChanged.connect(
            lambda n, pct: self.area_label.setText(
                f"Mask {n:,} px ({pct:.2f} %)" if self.canvas.mask() is not None else ""))
        self.engine.jobFailed.connect(
            lambda job, message, details: self.show_error(f"{job.title} failed", message, details))
        self.tabs.currentChanged.connect(self._panel_changed)
        self.start_page.newRequested.connect(self.new_project)
        self.start_page.openRequested.connect(self.open_project_dialog)
        self.start_page.demoRequested.connect(lambda: self.open_demo_project())
        self.start_page.recentRequested.connect(self.open_project)
        self.start_page.set_reopen_last(self.settings.reopen_last_project)
        self.start_page.reopenLastChanged.connect(
            lambda on: setattr(self.settings, "reopen_last_project", on))
        self._brush_changed(self.canvas.brush_radius())

    # ================================================================== projects
    def open_project(self, folder: Path) -> bool:
        """Open the project in ``folder``; reports problems in a dialog."""
        workspace: Workspace | None
        try:
            workspace = Workspace.open(folder)
        except AnoGenError as exc:
            workspace = relink_moved_datasets(self, folder)  # a linked dataset moved: ask where to
            if workspace is None:
                self.show_error("Cannot open project", str(exc))
                return False
        self._set_workspace(workspace)
        return True

    def _set_workspace(self, workspace: Workspace | None) -> None:
        self.start_page.set_demo_building(False)
        if self.studio.workspace is not None:
            self.controller.remember_view()
            self.studio.flush()
        self.studio.set_workspace(workspace)
        if workspace is not None:
            self.settings.add_recent_project(workspace.root)
            self._rebuild_recent_menu()
            self._restore_project_view()

    def _restore_project_view(self) -> None:
        view = self.studio.view_state()
        panel = view.get("panel")
        if panel in self.panels:
            self.show_panel(panel)
        selection = Selection.from_json(view.get("selection")) if view.get("selection") else None
        if selection is None:
            project = self.studio.project
            if project.defect_kinds and project.defect_kinds[0].support:
                selection = Selection("support", project.defect_kinds[0].name, 0)
            elif project.good_images:
                selection = Selection("good", project.good_images[0].image)
        if selection is not None:
            self.studio.select(selection)
            state = view.get("canvas")
            if isinstance(state, dict):
                QTimer.singleShot(0, lambda: self._restore_canvas(state, selection))

    def _restore_canvas(self, state: dict, selection: Selection) -> None:
        if self.controller.current == selection and state.get("for") == selection.to_json():
            self.canvas.restore_view_state(state)
        if state.get("tool") in {t.value for t in Tool}:
            self.canvas.set_tool(state["tool"])

    def new_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "New project: choose an empty folder",
                                                  self.settings.last_folder)
        if not folder:
            return
        name, ok = QInputDialog.getText(self, "New project", "Project name:", text=Path(folder).name)
        if not ok or not name.strip():
            return
        self.settings.last_folder = folder
        self.create_project(Path(folder), name.strip())

    def create_project(self, folder: Path, name: str) -> bool:
        try:
            workspace = Workspace.create(folder, name)
        except AnoGenError as exc:
            self.show_error("Cannot create project", str(exc))
            return False
        self._set_workspace(workspace)
        return True

    def open_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open project folder", self.settings.last_folder)
        if folder:
            self.settings.last_folder = str(Path(folder).parent)
            self.open_project(Path(folder))

    def close_project(self) -> None:
        self._set_workspace(None)

    def open_demo_project(self, folder: Path | None = None, *, wait: bool = False) -> None:
        """Open the demo project in ``folder`` (default: the app's data folder), building it first
        (the demo dataset and a project on it) when it does not exist yet."""
        folder = Path(folder) if folder is not None else default_demo_folder()
        if (folder / "project.json").is_file():
            self.open_project(folder)
            return
        self.start_page.set_demo_building(True)
        self.engine.submit("Build the demo project", build_demo_project, folder,
                           on_result=lambda path: self.open_project(Path(path)),
                           on_failure=lambda _state: self.start_page.set_demo_building(False))
        if wait:
            self.engine.wait(300)

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_projects()
        for number, folder in enumerate(recent[:9], start=1):
            action = self.recent_menu.addAction(f"&{number} {folder}")
            action.setShortcut(QKeySequence(f"Ctrl+Alt+{number}"))
            action.triggered.connect(lambda _c=False, f=folder: self.open_project(f))
        self.start_page.set_recent(recent[:9])
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", self._clear_recent_projects)

    def _clear_recent_projects(self) -> None:
        self.settings.clear_recent_projects()
        self._rebuild_recent_menu()

    def _project_changed(self) -> None:
        self._update_title()
        self.centre.setCurrentWidget(self.work_area if self.studio.project is not None else self.start_page)
        for panel in self.panels.values():
            panel.project_changed()

    # ================================================================== view state
    def show_panel(self, name: str) -> None:
        if name in self.panels:
            self.tabs.setCurrentWidget(self.panels[name])
            self._show_results_for(name)

    def _show_results_for(self, panel: str) -> None:
        """Samples under the canvas with Generate, test images with Train; Defects gets the
        whole height for painting."""
        pane = getattr(self.panels.get(panel), "results_pane", None)
        was_visible = not self.results_tabs.isHidden()
        self.results_tabs.setVisible(pane is not None)
        if pane is not None:
            self.results_tabs.setCurrentWidget(pane)
            if not was_visible:
                # Shown again: the splitter would hand the pane its whole size hint and leave
                # the canvas a strip; split 3:2 instead (the user's drags hold until it hides).
                total = sum(self.work_area.sizes()) or self.work_area.height()
                self.work_area.setSizes([total * 3 // 5, total - total * 3 // 5])

    def current_panel(self) -> str:
        widget = self.tabs.currentWidget()
        return next((name for name, panel in self.panels.items() if panel is widget), "defects")

    def _panel_changed(self, _index: int) -> None:
        name = self.current_panel()
        self._show_results_for(name)
        self.settings.last_panel = name
        self.studio.update_view(panel=name)
        self.panels[name].activated()

    def _update_title(self) -> None:
        project = self.studio.project
        if project is None:
            self.setWindowTitle(APP_TITLE)
            self.setWindowModified(False)
            return
        read_only = self.studio.workspace.read_only_reason() if self.studio.workspace else ""
        self.setWindowTitle(f"{project.name}{f' [{read_only}]' if read_only else ''} [*] — {APP_TITLE}")
        self.setWindowModified(self.studio.is_dirty())

    def _history_changed(self, can_undo: bool, can_redo: bool) -> None:
        self.undo_action.setEnabled(can_undo)
        self.redo_action.setEnabled(can_redo)

    def _tool_changed(self, tool: str) -> None:
        action = self.tool_actions.get(Tool(tool))
        if action is not None:
            action.setChecked(True)
        if self.controller.current is not None:
            self.studio.update_view(tool=tool)
        self._brush_changed(self.canvas.brush_radius())

    def _brush_changed(self, radius: int) -> None:
        self.settings.brush_radius = radius
        self.brush_label.setText(f"Brush radius {radius} px   ([ / ], Ctrl+Wheel)")

    def _cursor_moved(self, x: int, y: int, text: str) -> None:
        self.cursor_label.setText("" if x < 0 else f"x {x}  y {y}   {text}")

    def cycle_theme(self) -> None:
        order = ("auto", "light", "dark")
        choice = order[(order.index(self.settings.theme) + 1) % 3] if self.settings.theme in order else "auto"
        self.settings.theme = choice
        theme.apply_theme(cast(QApplication, QApplication.instance()), choice)
        self.statusBar().showMessage(f"Theme: {choice}", 3000)

    # ================================================================== status
    def _detect_device(self) -> None:
        """Name the compute device in the status bar; importing torch takes seconds, so off the UI thread."""
        self._deviceDetected.connect(self.device_label.setText)

        def detect() -> None:
            try:
                from anogen.device import describe_device, resolve_device

                text = describe_device(resolve_device("auto"))
            except Exception as exc:  # noqa: BLE001 - the status bar must not break the app
                text = f"Device: unknown ({exc.__class__.__name__})"
            try:
                self._deviceDetected.emit(text)
            except RuntimeError:  # the window closed before torch finished importing
                pass

        threading.Thread(target=detect, name="anogen-device", daemon=True).start()

    def _update_memory(self) -> None:
        text = ""
        try:
            with open("/proc/self/statm", encoding="ascii") as handle:
                rss_pages = int(handle.read().split()[1])
            text = f"RAM {rss_pages * os.sysconf('SC_PAGE_SIZE') / 2**30:.2f} GB"
        except (OSError, ValueError, IndexError, AttributeError):
            try:
                import resource

                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                text = f"RAM peak {peak / (2**30 if sys.platform == 'darwin' else 2**20):.2f} GB"
            except (ImportError, OSError):
                text = ""
        torch = sys.modules.get("torch")  # only when a thread already loaded it; importing it here is slow
        try:
            if torch is not None and torch.cuda.is_available():
                text += f"   GPU {torch.cuda.memory_allocated() / 2**30:.2f} GB"
        except (AttributeError, RuntimeError):  # torch is still being imported by another thread
            pass
        self.memory_label.setText(text)

    # ================================================================== dialogs
    def show_error(self, title: str, message: str, details: str = "") -> QMessageBox:
        """One dialog per distinct error: the same error again raises the open dialog instead."""
        # Closed boxes delete themselves (WA_DeleteOnClose); touching their wrapper would raise.
        self._error_boxes = [b for b in self._error_boxes if shiboken6.isValid(b) and b.isVisible()]
        for box in self._error_boxes:
            if box.windowTitle() == title and box.text() == message:
                box.raise_()
                return box
        box = show_error(self, title, message, details)
        self._error_boxes.append(box)
        return box

    def show_shortcuts(self) -> ShortcutsDialog:
        dialog = ShortcutsDialog(self.shortcut_rows(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def shortcut_rows(self) -> list[tuple[str, str, str]]:
        return list(self._shortcut_rows)

    def show_about(self) -> None:
        import anogen

        QMessageBox.about(self, f"About {APP_TITLE}",
                          f"<b>{APP_TITLE}</b> {getattr(anogen, '__version__', '')}<br>"
                          "Few-shot defect generation (AnoGen) and weakly supervised defect detectors.")

    def prepare_for_screenshot(self) -> None:
        """Let the current panel draw its final state (used by ``--screenshot``)."""
        panel = self.panels.get(self.current_panel())
        if panel is not None:
            panel.prepare_for_screenshot()

    # ================================================================== closing
    def closeEvent(self, event: QCloseEvent) -> None:
        if self.engine.is_busy() and self.confirm_close:
            answer = QMessageBox.question(self, "A job is running",
                                          "Cancel the running job and quit? Nothing half-written is kept.")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.engine.shutdown()
        self.controller.remember_view()
        self.studio.close()
        self.settings.set_window_geometry(self.saveGeometry())
        self.settings.set_window_state(self.saveState())
        self.settings.mask_opacity = self.canvas.mask_opacity()
        self.settings.sync()
        self.engine.set_log_file(None)
        super().closeEvent(event)
