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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from anogen import __version__
from anogen.compute import prefer_sleeping_openmp_threads

PANELS = ("defects", "generate", "train")

# What Qt's xcb platform plugin (the X11 one, used on most Linux desktops) loads besides Qt
# itself, with the Debian/Ubuntu package of each. Without them Qt only says "could not load
# the Qt platform plugin xcb" and aborts, which tells a user nothing.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
}
XCB_PACKAGES = ("libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxkbcommon-x11-0 "
                "libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-xkb1")


def xcb_install_hint(packages: Sequence[str] | None = None) -> str:
    """What to run when the X11 platform plugin cannot start."""
    names = " ".join(packages) if packages else XCB_PACKAGES
    return ("anogen-studio: Qt cannot open a window: its X11 (xcb) platform plugin needs system libraries "
            f"that are missing. On Debian/Ubuntu install them with:\n    sudo apt-get install -y {names}\n"
            "(or run headless with QT_QPA_PLATFORM=offscreen).")


def missing_xcb_packages(load: Callable[[str], object] | None = None) -> list[str]:
    """The Debian packages of the xcb plugin's libraries that do not load here (Linux with
    X11 only: elsewhere, or with another platform plugin chosen, nothing is missing)."""
    import ctypes
    import os

    if not sys.platform.startswith("linux"):
        return []
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return []
    if not platform and not os.environ.get("DISPLAY"):
        return []  # Wayland or no display: Qt picks another plugin or says so itself
    load = load or ctypes.CDLL
    missing = []
    for library, package in XCB_LIBRARIES.items():
        try:
            load(library)
        except OSError:
            missing.append(package)
    return missing


def _install_platform_message_hint() -> None:
    """Print the apt-get line when Qt reports that its platform plugin failed (it then aborts)."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    previous: dict[str, Any] = {"handler": None}

    def handler(kind: QtMsgType, context, message: str) -> None:  # context: QMessageLogContext
        if kind == QtMsgType.QtFatalMsg and "platform plugin" in message:
            print(xcb_install_hint(), file=sys.stderr)
        if previous["handler"] is not None:
            previous["handler"](kind, context, message)
        elif kind != QtMsgType.QtDebugMsg:
            print(message, file=sys.stderr)

    previous["handler"] = qInstallMessageHandler(handler)


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


def main(argv: Sequence[str] | None = None) -> int:
    multiprocessing.freeze_support()  # first: a frozen app's worker processes start here
    prefer_sleeping_openmp_threads()  # before the engine loads torch
    args = build_parser().parse_args(argv)
    if args.selftest:
        from anogen.selftest import run_selftest

        return run_selftest(("anogen", "app"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from app.qtcompat import protect_bool_singletons

    protect_bool_singletons()  # before any signal is emitted; see app/qtcompat.py

    missing = missing_xcb_packages()
    if missing:
        print(xcb_install_hint(missing), file=sys.stderr)
        return 1
    _install_platform_message_hint()

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.settings import APPLICATION, ORGANIZATION, Settings

    app = cast(QApplication, QApplication.instance() or QApplication(sys.argv[:1]))
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
            except Exception as exc:  # noqa: BLE001 - report and fail the command, never hang
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
