"""Screenshots of each panel of AnoGen Studio on the demo project, for the docs.

    xvfb-run -a python scripts/screenshots.py [--out docs/screenshots] [--project DIR]

Builds the demo project (demo dataset; the embedded demo model when
``resources/models/demo-ldm`` exists), drives the real window through the stages like a
user (Learn, Propose boxes, Preview, Generate, Train detector) and saves one PNG per
panel. Without the demo model, stages 1-2 are skipped and the detector trains on
synthetic anomalies only; the screenshots say so in the panels' own status lines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--project", type=Path, help="demo project folder (default: a temporary folder)")
    parser.add_argument("--size", default="1440x900")
    parser.add_argument("--learn-steps", type=int, default=150)
    parser.add_argument("--generate-steps", type=int, default=25)
    parser.add_argument("--train-steps", type=int, default=120, help="0: the preset's length")
    parser.add_argument("--guidance", type=float, default=5.0, help="the demo model likes 5")
    parser.add_argument("--generate-images", type=int, default=6, help="good images that get boxes and samples")
    parser.add_argument("--preset", default="quick", choices=("quick", "paper"))
    parser.add_argument("--train-size", type=int, default=0, help="detector image size (0: the preset's)")
    parser.add_argument("--theme", default="light", choices=("light", "dark", "auto"))
    args = parser.parse_args()

    from app.qtcompat import protect_bool_singletons

    protect_bool_singletons()
    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.main import save_screenshot
    from app.main_window import MainWindow, demo_model_folder
    from app.settings import Settings
    from app.studio import Selection

    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme.apply_theme(app, args.theme)
    scratch = Path(tempfile.mkdtemp(prefix="anogen-shots-"))
    window = MainWindow(settings=Settings(scratch / "settings.ini"), restore_geometry=False)
    window.confirm_close = False
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.show()
    engine = window.engine
    errors: list[str] = []
    engine.jobFailed.connect(lambda job, message, _details: errors.append(f"{job.title}: {message}"))

    def wait(what: str) -> None:
        if not engine.wait(3600):
            raise SystemExit(f"{what}: timed out")
        if errors:
            raise SystemExit(f"{what} failed: {errors[-1]}")

    def shoot(name: str) -> None:
        window.prepare_for_screenshot()
        path = save_screenshot(window, args.out / f"{name}.png")
        print(path)

    project_dir = args.project or scratch / "demo-project"
    window.open_demo_project(project_dir, wait=True)
    wait("building the demo project")
    studio = window.studio
    project = studio.project
    has_model = demo_model_folder() is not None and bool(project.model)
    kind = project.defect_kinds[0]

    # 1. Defects: a support image with its painted mask; Learn when the demo model is there.
    window.show_panel("defects")
    studio.select(Selection("support", kind.name, 0))
    defects = window.panels["defects"]
    if has_model and not kind.embedding:
        defects.steps_spin.setValue(args.learn_steps)
        defects.scale_lr_check.setCurrentIndex(1)  # lr x batch, as the demo pipeline learns
        defects.learn()
        wait("learning")
    studio.select(Selection("support", kind.name, 0))
    window.canvas.fit()
    shoot("defects")

    # 2. Generate: boxes on good images, a preview, a generated set under review.
    window.show_panel("generate")
    generate = window.panels["generate"]
    generate.propose_scope.setCurrentIndex(0)  # the selected image
    generate.foreground_combo.setCurrentIndex(2)  # the demo fabric is a texture: boxes anywhere
    for good in project.good_images[: args.generate_images]:
        if not good.boxes:
            studio.select(Selection("good", good.image))
            generate.propose()
            wait("proposing boxes")
    good = project.good_images[0]
    studio.select(Selection("good", good.image))
    if has_model and project.defect_kind(kind.name).embedding:
        generate.steps_spin.setValue(args.generate_steps)
        generate.guidance_spin.setValue(args.guidance)
        generate.per_image_spin.setValue(2)
        generate.preview()
        wait("previewing")
        if not project.generated_sets:
            generate.generate()
            wait("generating")
        generate.gallery.setCurrentRow(0)
        if generate.gallery.count() > 2:
            generate.gallery.setCurrentRow(1)
            generate.set_status("rejected")
            generate.gallery.setCurrentRow(0)
            generate.set_status("accepted")
        generate.gallery.setCurrentRow(0)
        studio.select(Selection("sample", project.generated_sets[-1].name, 0))  # sample vs its source
    shoot("generate")

    # 3. Train: one button; curves, metrics, heat maps of the test images.
    window.show_panel("train")
    train = window.panels["train"]
    train.preset_combo.setCurrentText(args.preset)
    train.steps_spin.setValue(args.train_steps)
    train.size_spin.setValue(args.train_size)
    if not project.detectors:
        train.train()
        wait("training")
    elif train.results is None:
        train.test()
        wait("testing")
    if train.gallery.count():
        train.gallery.setCurrentRow(0)
    shoot("train")

    # The whole window in the other theme, on the defects panel.
    theme.apply_theme(app, "dark" if args.theme != "dark" else "light")
    window.show_panel("defects")
    studio.select(Selection("support", kind.name, 1 if len(kind.support) > 1 else 0))
    shoot("defects-dark" if args.theme != "dark" else "defects-light")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
