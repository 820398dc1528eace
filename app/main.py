"""The ``anogen-studio`` entry point.

    anogen-studio [PROJECT_DIR] [--screenshot OUT.png] [--panel defects|generate|train]

``--screenshot`` opens the window, lets it lay out and paint, saves a PNG of it and
exits; the docs and the checks use it (run under ``xvfb-run`` on a headless machine).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from pathlib import Path
from typing import Optional, Sequence

from anogen import __version__

PANELS = ("defects", "generate", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anogen-studio",
        description="AnoGen Studio: paint defect masks, generate defects, train detectors.")
    parser.add_argument("project", nargs="?", help="project folder to open")
    parser.add_argument("--screenshot", metavar="OUT.png",
                        help="render the window to this PNG and exit")
    parser.add_argument("--panel", choices=PANELS, help="panel to show first")
    parser.add_argument("--demo", action="store_true",
                        help="open (building it if needed) the demo project in PROJECT or a temp folder")
    parser.add_argument("--size", default="1440x900", metavar="WxH",
                        help="window size for --screenshot (default 1440x900)")
    parser.add_argument("--theme", choices=("auto", "light", "dark"), help="colour theme")
    parser.add_argument("--version", action="version", version=f"anogen-studio {__version__}")
    parser.add_argument("--selftest", action="store_true",
                        help="check that this installation works (imports, model, one generation, "
                             "one detector step, on the CPU) and exit")
    return parser


def _window_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"anogen-studio: --size must look like 1440x900, got {text!r}") from None
    return max(640, w), max(480, h)


def save_screenshot(window, out: Path) -> Path:
    """Render ``window`` (a QWidget) to a PNG at ``out``; returns the path."""
    from PySide6.QtWidgets import QApplication

    for _ in range(5):  # let layouts settle and deferred paints run
        QApplication.processEvents()
    pixmap = window.grab()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not pixmap.save(str(out), "PNG"):
        raise OSError(f"{out}: could not write the screenshot")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    multiprocessing.freeze_support()  # first: a frozen app's worker processes start here
    args = build_parser().parse_args(argv)
    if args.selftest:
        from anogen.selftest import run_selftest

        return run_selftest(("anogen", "app"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from app.qtcompat import protect_bool_singletons

    protect_bool_singletons()  # before any signal is emitted; see app/qtcompat.py

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.settings import APPLICATION, ORGANIZATION, Settings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    settings = Settings()
    theme.apply_theme(app, args.theme or settings.theme)
    theme.follow_system(app)

    from app.main_window import MainWindow

    window = MainWindow(settings=settings, restore_geometry=not args.screenshot)
    if args.screenshot:
        window.resize(*_window_size(args.size))
        window.confirm_close = False
    window.show()

    if args.demo:
        window.open_demo_project(Path(args.project) if args.project else None, wait=bool(args.screenshot))
    elif args.project:
        window.open_project(Path(args.project))
    elif settings.reopen_last_project and settings.recent_projects():
        window.open_project(settings.recent_projects()[0])  # the first screen shows if it fails
    if args.panel:
        window.show_panel(args.panel)

    if args.screenshot:
        out = Path(args.screenshot)
        status = {"code": 0}

        def shoot() -> None:
            try:
                window.prepare_for_screenshot()
                print(save_screenshot(window, out))
            except Exception as exc:  # report and fail the command, never hang
                print(f"anogen-studio: screenshot failed: {exc}", file=sys.stderr)
                status["code"] = 1
            window.close()
            app.quit()

        QTimer.singleShot(400, shoot)
        app.exec()
        return status["code"]
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
