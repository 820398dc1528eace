"""The bugs an inspection engineer hit driving the app (issue 12), each driven like a user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

import numpy as np
from _app_helpers import add_learned_kind_and_set, drag, visible_message_boxes, write_project
from PySide6.QtCore import Qt

from anogen.data.workspace import Workspace
from app.canvas import Tool
from app.studio import Selection


@pytest.fixture
def project(tmp_path) -> Path:
    return write_project(tmp_path)


# ---------------------------------------------------------------- bug 13
def test_add_kind_leaves_no_other_kinds_image_to_paint_on(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 0))
    assert window.canvas.has_image()
    defects = window.panels["defects"]

    assert defects.add_kind("dent", "dent")
    assert defects.current_kind() == "dent"
    # The canvas must not keep showing (and editing) scratch's first support image.
    assert not window.canvas.has_image()
    assert window.controller.current == Selection("defect_kind", "dent")
    assert window.studio.selection.name == "dent"
    window.canvas.set_tool(Tool.BRUSH)
    drag(window.canvas, [(20, 40), (50, 40), (70, 40)])
    window.studio.flush()
    scratch = Workspace.open(project).project.defect_kind("scratch")
    assert all(s.mask is None for s in scratch.support)

    # Back on scratch, its image is shown again and editable.
    defects.kind_combo.setCurrentText("scratch")
    assert window.controller.current == Selection("support", "scratch", 0)
    assert window.canvas.has_image() and window.canvas.mask() is not None


def test_a_tree_header_shows_its_first_item_not_the_last_image(make_window, project, qtbot):
    """Selecting the "Good images" header left the last support image on the canvas, and a
    stroke there edited that support mask while the Generate tab was about good images."""
    from anogen.data.imageio import read_image

    window = make_window()
    window.open_project(project)
    window.show_panel("generate")
    window.studio.select(Selection("support", "scratch", 0))
    window.studio.select(Selection("goods"))
    first_good = window.studio.project.good_images[0]
    assert window.controller.current == Selection("good", first_good.image)
    assert (window.canvas.image() == read_image(project / first_good.image)).all()

    def support_masks():
        support = Workspace.open(project).project.defect_kind("scratch").support
        return [(project / s.mask).read_bytes() if s.mask else None for s in support]

    before = support_masks()
    window.studio.select(Selection("support", "scratch", 0))
    window.studio.select(Selection("generated_sets"))  # this project has none: nothing to edit
    assert not window.canvas.has_image() and "No generated set" in window.canvas.placeholder()
    window.canvas.set_tool(Tool.BRUSH)
    drag(window.canvas, [(20, 40), (50, 40), (70, 40)])
    window.studio.flush()
    assert support_masks() == before


def test_removing_the_shown_support_image_reloads_the_canvas(make_window, project, qtbot):
    from anogen.data.imageio import read_image

    window = make_window()
    window.open_project(project)
    defects = window.panels["defects"]
    window.studio.select(Selection("support", "scratch", 0))
    defects.gallery.setCurrentRow(0)
    defects.remove_support()
    remaining = window.studio.project.defect_kind("scratch").support
    assert len(remaining) == 1
    # Strokes now go to support 0, which is the other image: the canvas must show that one.
    assert window.controller.current == Selection("support", "scratch", 0)
    assert (window.canvas.image() == read_image(project / remaining[0].image)).all()


def test_removing_the_last_kind_clears_the_canvas(make_window, project, qtbot):
    window = make_window()
    window.open_project(project)
    window.studio.select(Selection("support", "scratch", 1))
    window.panels["defects"].delete_kind("scratch")
    assert not window.canvas.has_image() and window.controller.current is None


# ---------------------------------------------------------------- bug 3
def test_regenerate_shows_the_new_image_and_keeps_the_sample_selected(make_window, project, qtbot, monkeypatch):
    import app.tasks
    from anogen.data.imageio import read_image
    from app.tasks import PreviewResult

    name = add_learned_kind_and_set(project)
    new_image = np.full((96, 96, 3), 250, np.uint8)

    def fake_preview(task, progress, cancel):  # the diffusion model is not what this test is about
        return PreviewResult(read_image(task.image), new_image.copy(), task.box, task.seed,
                             task.generate.image_settings())

    monkeypatch.setattr(app.tasks, "run_preview", fake_preview)
    window = make_window()
    window.open_project(project)
    window.show_panel("generate")
    panel = window.panels["generate"]
    assert panel.set_combo.currentText() == name
    panel.gallery.setCurrentRow(1)
    assert window.studio.selection == Selection("sample", name, 1)
    assert not (window.canvas.image() == 250).all()

    assert panel.regenerate_action.isEnabled()
    panel.regenerate_action.trigger()  # Ctrl+Shift+R
    assert window.engine.wait(30)
    sample = window.studio.project.generated_set(name).samples[1]
    assert (read_image(project / sample.image) == 250).all()
    # The set's manifest line now says how the new image was made (the panel's settings).
    from anogen.data.generated import read_generated_set

    line = read_generated_set(project / "generated" / "set1")[1]
    generation = panel._generate_config()
    assert (line.steps, line.guidance, line.settings) == (generation.steps, generation.guidance,
                                                          generation.image_settings())
    assert panel.gallery.selected_keys() == [1]
    assert window.studio.selection == Selection("sample", name, 1)
    assert (window.canvas.image() == 250).all(), "the canvas shows the regenerated image"
    assert window.canvas.compare_split() is not None


# ---------------------------------------------------------------- bugs 4, 5, 6
def _fail(config, progress, cancel):
    raise ValueError(f"broken {config}")


def test_error_dialogs_keep_working_after_the_first_one_is_closed(make_window, project, qtbot):
    from PySide6.QtCore import QCoreApplication, QEvent

    window = make_window()
    for attempt in range(3):
        with qtbot.waitSignal(window.engine.jobFailed, timeout=5000):
            window.engine.submit(f"Job {attempt}", _fail, attempt, heavy=False)
        [box] = visible_message_boxes()
        assert f"broken {attempt}" in box.text()
        box.close()
        # The closed box is deleted (WA_DeleteOnClose); the next error must not touch it.
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        assert not visible_message_boxes()


def test_the_same_error_twice_shows_one_dialog(make_window, project, qtbot):
    window = make_window()
    first = window.show_error("Check model failed", "no such folder", "details")
    second = window.show_error("Check model failed", "no such folder", "details")
    assert first is second and len(visible_message_boxes()) == 1


def test_bad_model_path_and_return_checks_once_and_keeps_the_good_model(make_window, project, qtbot):
    from PySide6.QtCore import Qt

    name = add_learned_kind_and_set(project)
    good_model = str(project / "good-model")
    Path(good_model).mkdir()
    workspace = Workspace.open(project)
    workspace.project.model = good_model
    workspace.save()
    window = make_window()
    window.open_project(project)
    window.activateWindow()
    panel = window.panels["defects"]
    generate = window.panels["generate"]
    window.studio.select(Selection("good", window.studio.project.good_images[0].image))
    window.canvas.set_boxes([(5, 5, 30, 30)])
    window.canvas.boxesEdited.emit(window.canvas.boxes())
    assert generate.generate_button.isEnabled() and generate.preview_button.isEnabled()
    checks = []
    window.engine.jobStarted.connect(lambda job: checks.append(job.title))

    panel.model_edit.setFocus()
    panel.model_edit.selectAll()
    bad = str(project / "no-such-model")
    qtbot.keyClicks(panel.model_edit, bad)
    with qtbot.waitSignal(window.engine.jobFailed, timeout=20000):
        qtbot.keyClick(panel.model_edit, Qt.Key.Key_Return)
    window.canvas.setFocus()  # focus leaves the field: editingFinished fires again
    qtbot.wait(50)
    assert window.engine.wait(20)
    assert len([t for t in checks if t.startswith("Check model")]) == 1, checks
    assert len(visible_message_boxes()) == 1

    # The working model stays in the project until a new one passes its check.
    assert window.studio.project.model == good_model
    assert json.loads((project / "project.json").read_text())["model"] == good_model
    assert panel.model_status.text().startswith("✗") and "good-model" in panel.model_status.text()
    assert not generate.generate_button.isEnabled() and not generate.preview_button.isEnabled()
    assert not panel.learn_action.isEnabled()
    assert generate.set_combo.currentText() == name

    # Esc in the field goes back to the model in use.
    visible_message_boxes()[0].close()
    panel.model_edit.setFocus()
    qtbot.keyClick(panel.model_edit, Qt.Key.Key_Escape)
    assert panel.model_edit.text() == good_model and generate.generate_button.isEnabled()

    # One action puts the shipped demo model in, checked like any other.
    with qtbot.waitSignal(window.engine.jobFinished, timeout=60000):
        panel.demo_model_action.trigger()
    assert Path(window.studio.project.model).name == "demo-ldm"
    assert panel.model_edit.text() == window.studio.project.model
    assert generate.generate_button.isEnabled()


# ---------------------------------------------------------------- bugs 7, 8, 9
def _boxed_generate_window(make_window, project, boxes):
    from anogen.data.box import Box

    add_learned_kind_and_set(project)
    workspace = Workspace.open(project)
    good = workspace.project.good_images[0].image
    workspace.set_boxes(good, [Box(*b) for b in boxes])
    workspace.save()
    window = make_window()
    window.open_project(project)
    window.show_panel("generate")
    return window, window.panels["generate"]


def test_failed_generate_replaces_the_generating_status(make_window, project, qtbot, monkeypatch):
    import app.panels.generate

    def broken(task, progress, cancel):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(app.panels.generate, "run_generate", broken)
    window, panel = _boxed_generate_window(make_window, project, [(5, 5, 30, 30)])
    panel.generate_button.click()
    assert panel.status.text().startswith("Generating")
    assert window.engine.wait(20)
    assert panel.status.text().startswith("Generation failed")
    assert "out of memory" in panel.status.text() and "…" not in panel.status.text()
    for box in visible_message_boxes():
        box.close()


def test_every_drawn_box_gets_n_samples(make_window, project, qtbot, monkeypatch):
    import app.panels.generate

    tasks = []

    def capture(task, progress, cancel):
        tasks.append(task)
        raise RuntimeError("not generating in this test")

    monkeypatch.setattr(app.panels.generate, "run_generate", capture)
    drawn = [(5, 5, 30, 30), (40, 5, 70, 30), (5, 50, 30, 80)]
    window, panel = _boxed_generate_window(make_window, project, drawn)
    panel.per_box_spin.setValue(2)
    panel.generate_button.click()
    assert window.engine.wait(20)
    [task] = tasks
    [(name, listed)] = task.boxes.items()
    # The library draws sample k of an image from box k % len(its boxes), per_image samples.
    used = [listed[k % len(listed)] for k in range(task.per_image)]
    counts = {box: sum(1 for b in used if (b.x0, b.y0, b.x1, b.y1) == box) for box in drawn}
    assert counts == dict.fromkeys(drawn, 2)
    for box in visible_message_boxes():
        box.close()


def test_uneven_box_counts_are_explained():
    from anogen.data.box import Box
    from app.panels.generate import plan_samples

    a, b, c = Box(0, 0, 8, 8), Box(10, 0, 18, 8), Box(20, 0, 28, 8)
    per_image, plan, note = plan_samples({"one.png": [a], "three.png": [a, b, c]}, 2)
    assert per_image == 6
    assert [plan["three.png"][k % 6] for k in range(6)] == [a, a, b, b, c, c]
    assert plan["one.png"] == [a] * 6
    assert "1 to 3 boxes" in note
    assert plan_samples({"x.png": [a, b]}, 3)[2] == ""


def test_generate_button_names_the_current_n(make_window, project, qtbot):
    window, panel = _boxed_generate_window(make_window, project, [(5, 5, 30, 30)])
    for n in (1, 7, 3):
        panel.per_box_spin.setValue(n)
        assert panel.generate_button.text() == f"Generate {n} per box"


# ---------------------------------------------------------------- bug 10
def _wheel(widget, steps: int = -3) -> None:
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def _window_on_panel(make_window, project, name: str):
    window = make_window()
    window.open_project(project)
    window.activateWindow()  # focus (for the focused-widget rules) needs an active window
    window.show_panel(name)
    return window, window.panels[name]


def test_scrolling_the_panel_over_a_slider_does_not_move_it(make_window, project, qtbot):
    window, train = _window_on_panel(make_window, project, "train")
    threshold = train.threshold_slider
    before = threshold.value()
    _wheel(threshold)  # the threshold sits in the test-images pane under the canvas
    assert threshold.value() == before

    window.show_panel("defects")
    opacity = window.panels["defects"].opacity_slider
    start = opacity.value()
    bar = window.panels["defects"].scroll_area.verticalScrollBar()
    bar.setValue(bar.maximum())
    _wheel(opacity, steps=2)
    assert opacity.value() == start
    assert bar.maximum() == 0 or bar.value() < bar.maximum(), "the wheel scrolls the panel instead"
    spin = window.panels["defects"].steps_spin
    value = spin.value()
    _wheel(spin, steps=2)
    assert spin.value() == value

    # Focused (clicked or tabbed to), the wheel changes the value as usual.
    opacity.setFocus()
    qtbot.waitUntil(opacity.hasFocus, timeout=2000)
    _wheel(opacity, steps=2)
    assert opacity.value() != start


def test_a_scroll_under_way_does_not_change_the_focused_field_it_passes(make_window, project, qtbot):
    from app.widgets.wheel_guard import SCROLL_GESTURE_S, WheelGuard

    window, panel = _window_on_panel(make_window, project, "defects")
    window.resize(window.width(), 420)  # short enough that the panel scrolls
    qtbot.waitUntil(lambda: panel.scroll_area.verticalScrollBar().maximum() > 0, timeout=3000)
    [guard] = panel.findChildren(WheelGuard)
    now = [100.0]
    guard.clock = lambda: now[0]
    lr = panel.lr_spin
    lr.setFocus()  # the user has just typed a learning rate
    qtbot.waitUntil(lr.hasFocus, timeout=2000)
    typed = lr.value()
    bar = panel.scroll_area.verticalScrollBar()
    bar.setValue(0)

    _wheel(panel.scroll_area.viewport(), steps=-1)  # scrolling the panel from its background...
    scrolled = bar.value()
    assert scrolled > 0
    now[0] += 0.1
    _wheel(lr, steps=-1)  # ...until the field slides under the pointer
    assert lr.value() == typed
    assert bar.value() > scrolled, "the panel keeps scrolling"

    now[0] += SCROLL_GESTURE_S + 0.1  # a pause, then a deliberate turn on the focused field
    _wheel(lr, steps=1)
    assert lr.value() != typed


# ---------------------------------------------------------------- bug 14
def test_first_eta_follows_the_steady_pace_not_the_warm_up():
    from anogen.jobs import Progress
    from app.engine import Job

    job = Job(1, "Learn", lambda *a: None, None)
    job.started_at = 0.0
    clock = 0.0

    def report(step: int, total: int = 100) -> None:
        job.last = Progress(step, total, "")
        job.pace.observe(clock, step, total)

    report(0)  # "loading the model"
    assert job.eta_seconds(now=0.0) is None
    clock = 40.0  # 40 s of loading, then a slow first step and 1 s per step after it
    report(1)
    assert job.eta_seconds(now=clock) is None  # one timed step is no pace yet
    for step in range(2, 11):
        clock += 1.0
        report(step)
    # 90 steps left at 1 s; the whole-job average would say (49 / 0.10) * 0.90 = 441 s.
    assert job.eta_seconds(now=clock) == pytest.approx(90.0)
    assert job.eta_seconds(now=clock + 5.0) == pytest.approx(85.0)  # counts down between reports

    # A new phase (another total) measures its own pace.
    clock += 1.0
    report(1, total=10)
    assert job.eta_seconds(now=clock) is None
    for step in range(2, 5):
        clock += 0.5
        report(step, total=10)
    assert job.eta_seconds(now=clock) == pytest.approx(3.0)


@pytest.fixture
def engine(qtbot):
    from app.engine import JobEngine

    # Kept alive until the events of its finished workers are processed (pytest-qt does
    # that after the test body), as in test_app_engine.py.
    engine = JobEngine()
    yield engine
    engine.shutdown()


def test_engine_times_reports_when_the_job_sends_them(engine, qtbot):
    import time

    from anogen.jobs import Progress

    def job_fn(config, progress, cancel):
        progress(Progress(0, 50, "loading"))
        time.sleep(1.0)  # warm-up: twenty steps' worth
        for step in range(1, 8):
            time.sleep(0.05)
            progress(Progress(step, 50, "step"))
        time.sleep(0.3)  # the UI reads the ETA while the job is still running

    job = engine.submit("Warm-up job", job_fn, None)
    qtbot.waitUntil(lambda: job.last is not None and job.last.step == 7, timeout=5000)
    eta = job.eta_seconds()
    whole_job_average = job.elapsed() * (1 - job.fraction) / job.fraction  # the old estimate
    # 43 steps at 0.05 s is about 2.2 s where the old estimate said about 8 s (ratios hold under load).
    assert eta is not None and 0.5 < eta < 0.6 * whole_job_average, (eta, whole_job_average)
    assert engine.wait(10)


# ---------------------------------------------------------------- bug 11
def test_import_runs_as_a_job_and_offers_to_downscale_large_images(make_window, project, qtbot, tmp_path,
                                                                  monkeypatch):
    from _app_helpers import picture
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QMessageBox

    import app.panels.defects
    from anogen.data.imageio import read_image, write_image

    monkeypatch.setattr(app.panels.defects, "LARGE_SIDE", 100)  # stands in for 4096 px: small files, fast test
    monkeypatch.setattr(app.panels.defects, "DOWNSCALED_SIDE", 60)
    big, small = tmp_path / "wide photo.png", tmp_path / "small.png"
    write_image(big, np.concatenate([picture(1, 120), picture(2, 120)], axis=1)[:90])  # 240x90
    write_image(small, picture(3, 50))
    window = make_window()
    window.open_project(project)
    panel = window.panels["defects"]
    reports = []
    window.engine.jobProgress.connect(lambda job, report: reports.append((report.step, report.total)))

    job = panel.import_files([big, small], large="downscale")
    assert job is not None and job.title.startswith("Import") and job.fn.__name__ == "run_import"
    assert window.engine.wait(30)
    support = window.studio.project.defect_kind("scratch").support
    assert [Path(s.image).name for s in support[2:]] == ["wide photo.png", "small.png"]
    assert read_image(project / support[2].image).shape == (22, 60, 3)  # 240x90 shrunk to 60 px wide
    assert (project / support[3].image).read_bytes() == small.read_bytes()
    assert reports[-1] == (2, 2)
    assert window.studio.selection == Selection("support", "scratch", 3)
    assert not window.studio.is_dirty()

    # Asked in a dialog: keep the original.
    def answer() -> None:
        [box] = [w for w in visible_message_boxes() if w.windowTitle() == "Very large images"]
        assert "240×90" in box.text()
        [keep] = [b for b in box.buttons() if b.text() == "Keep the originals"]
        keep.click()

    QTimer.singleShot(100, answer)
    assert panel.import_files([big]) is not None
    assert window.engine.wait(30)
    support = window.studio.project.defect_kind("scratch").support
    assert read_image(project / support[-1].image).shape == (90, 240, 3)

    # Cancelled in the dialog: nothing happens.
    def cancel() -> None:
        [box] = visible_message_boxes()
        box.button(QMessageBox.StandardButton.Cancel).click()

    QTimer.singleShot(100, cancel)
    assert panel.import_files([big]) is None
    assert len(window.studio.project.defect_kind("scratch").support) == 5


# ---------------------------------------------------------------- bug 2
def test_reopened_project_shows_the_same_labelled_test_numbers(make_window, project, qtbot):
    from _app_helpers import picture

    from anogen.data.imageio import write_image
    from app.tasks import TestImage, TestResults

    workspace = Workspace.open(project)
    (project / "detectors" / "d1").mkdir(parents=True)
    workspace.add_detector("d1", "detectors/d1", "draem", {"image_auroc": 0.95, "n_images": 9})
    workspace.save()
    images = []
    for i in range(6):
        path = project / "test" / f"{i}.png"
        write_image(path, picture(40 + i, 48))
        images.append(TestImage(path, int(i >= 3), "hole" if i >= 3 else "good", 0.1 * i, 0.15 * i,
                                np.full((48, 48), 0.1 * i, np.float32)))
    metrics = {"image_auroc": 0.625, "image_ap": 0.7, "pixel_auroc": 0.8, "n_images": 6, "n_scored": 6,
               "n_excluded": 5, "n_excluded_support": 3, "n_excluded_validation": 2, "protocol": "holdout",
               "checkpoint": "best"}
    results = TestResults(images, metrics, roc=(np.linspace(0, 1, 700), np.linspace(0, 1, 700) ** 0.5),
                          pr=(np.array([0.0, 1.0]), np.array([1.0, 0.5])), threshold=0.5)

    window = make_window()
    window.open_project(project)
    window.show_panel("train")
    train = window.panels["train"]
    assert "Validation" in train.metrics_caption.text() and "9 images" in train.metrics_caption.text()
    train.show_results(results)  # what the Test job hands over
    train.threshold_slider.setValue(400)
    shown = [train.metrics_table.item(r, 1).text() for r in range(train.metrics_table.rowCount())]
    counts = train.counts_label.text()
    assert shown[0] == "0.625"
    window.close()

    again = make_window()
    again.open_project(project)
    train = again.panels["train"]
    assert [train.metrics_table.item(r, 1).text() for r in range(train.metrics_table.rowCount())] == shown
    caption = train.metrics_caption.text()
    assert "Test set" in caption and "6 images scored" in caption and "5 excluded (3 support, 2 validation)" in caption
    assert train.threshold() == pytest.approx(0.4) and train.counts_label.text() == counts
    assert len(train.roc_plot.series()["ROC"].xs) <= 512 and train.pr_plot.series()["PR"].ys == [1.0, 0.5]
    assert train.gallery.count() == 6
    train.gallery.setCurrentRow(0)  # no stored heat map: the image alone
    assert again.canvas.image() is not None
    tree_rows = [again.tree.topLevelItem(3).child(i).text(0) for i in range(again.tree.topLevelItem(3).childCount())]
    assert tree_rows == ["d1 (draem)  ·  test AUROC 0.625"]


# ---------------------------------------------------------------- the first screen
def test_first_screen_starts_the_work_and_returns_when_the_project_closes(make_window, project, qtbot,
                                                                         monkeypatch):
    from app.main_window import MainWindow

    window = make_window()
    start = window.start_page
    assert window.centre.currentWidget() is start and start.isVisible() and not window.canvas.isVisible()
    assert not start.recent_list.isVisible() and start.recent_empty.isVisible()
    demo_calls = []
    monkeypatch.setattr(MainWindow, "open_demo_project", lambda self, *a, **k: demo_calls.append(a))
    qtbot.mouseClick(start.demo_button, Qt.MouseButton.LeftButton)
    assert demo_calls == [()]

    window.open_project(project)
    assert window.centre.currentWidget() is window.work_area and not start.isVisible()
    window.close_project()
    assert start.isVisible()
    assert start.recent_list.count() == 1 and str(project.resolve()) in start.recent_list.item(0).text()
    # Both lines of the entry are visible, however long the path: no horizontal scroll bar.
    assert not start.recent_list.horizontalScrollBar().isVisible()
    assert start.recent_list.viewport().height() >= start.recent_list.sizeHintForRow(0)
    item = start.recent_list.item(0)
    qtbot.mouseClick(start.recent_list.viewport(), Qt.MouseButton.LeftButton,
                     pos=start.recent_list.visualItemRect(item).center())
    assert window.studio.project is not None and window.studio.workspace.root == project.resolve()
    assert window.canvas.isVisible()

    assert not window.settings.reopen_last_project
    start.reopen_check.setChecked(True)
    assert window.settings.reopen_last_project


def test_start_up_reopens_the_last_project_when_asked(project, tmp_path, qtbot, monkeypatch):
    from PySide6.QtWidgets import QApplication

    import app.main
    import app.main_window
    from app.settings import SETTINGS_ENV, Settings

    settings_file = tmp_path / "start.ini"
    settings = Settings(settings_file)
    settings.add_recent_project(project)
    settings.reopen_last_project = True
    settings.sync()
    monkeypatch.setenv(SETTINGS_ENV, str(settings_file))
    made = []

    class Recorded(app.main_window.MainWindow):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(app.main_window, "MainWindow", Recorded)
    monkeypatch.setattr(QApplication, "exec", lambda self=None: 0)  # no event loop: look at the window
    assert app.main.main([]) == 0
    [window] = made
    qtbot.addWidget(window)
    assert window.studio.workspace is not None and window.studio.workspace.root == project.resolve()
    window.confirm_close = False
    window.close()


def test_a_model_folder_gone_since_last_time_is_said_on_open(make_window, project, qtbot):
    add_learned_kind_and_set(project)
    workspace = Workspace.open(project)
    workspace.project.model = str(project / "moved-model")  # the folder is not there
    workspace.save()
    window = make_window()
    window.open_project(project)
    defects, generate = window.panels["defects"], window.panels["generate"]
    assert defects.model_status.text().startswith("✗") and "not there any more" in defects.model_status.text()
    assert not window.studio.model_ready() and not generate.generate_button.isEnabled()
    assert window.studio.project.model == str(project / "moved-model")  # kept: the user may copy it back


def test_chart_tick_labels_never_repeat(qtbot):
    from app.widgets.plot import PlotWidget, tick_labels

    close = [1.205 + 0.0025 * i for i in range(5)]  # a loss curve that barely moves
    labels = tick_labels(close)
    assert len(set(labels)) == 5 and labels[0] == "1.205" and labels[2] == "1.21"
    assert tick_labels([0.0, 0.25, 0.5, 0.75, 1.0]) == ["0", "0.25", "0.5", "0.75", "1"]
    assert tick_labels([0, 375, 750, 1125, 1500]) == ["0", "375", "750", "1125", "1500"]  # steps, not 1.5e+03
    assert len(set(tick_labels([10 ** (0.0829 + 0.0005 * i) for i in range(5)]))) == 5  # log axis

    plot = PlotWidget("Training loss", x_label="step", log_y=True)
    qtbot.addWidget(plot)
    plot.set_series("loss", list(range(1, 101)), [1.21 - 0.0001 * i for i in range(100)])
    plot.resize(300, 170)
    assert not plot.grab().isNull()
