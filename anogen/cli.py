"""The ``anogen`` command.

Each sub-command lives in its own module under :mod:`anogen.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``run=`` to a function taking
the parsed arguments. Command modules import heavy libraries (torch, diffusers) inside
their run functions so ``anogen --help`` and ``anogen --version`` stay instant.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted
or cancelled.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import multiprocessing
import sys
from collections.abc import Sequence

from anogen import __version__
from anogen.compute import prefer_sleeping_openmp_threads
from anogen.errors import AnoGenError, JobCancelled

COMMAND_MODULES = (
    "anogen.commands.demo",
    "anogen.commands.dataset",
    "anogen.commands.learn",
    "anogen.commands.boxes",
    "anogen.commands.generate",
    "anogen.commands.train",
    "anogen.commands.evaluate",
    "anogen.commands.predict",
    "anogen.commands.export",
    "anogen.commands.import_annotations",
    "anogen.commands.export_data",
    "anogen.commands.run",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anogen",
        description="Few-shot defect generation (AnoGen) and weakly supervised defect detectors.",
    )
    parser.add_argument("--version", action="version", version=f"anogen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--selftest", action="store_true",
                        help="check that this installation works (imports, model, one generation, "
                             "one detector step, on the CPU) and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command not built yet: leave it out
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    multiprocessing.freeze_support()  # first: a frozen app's worker processes start here
    prefer_sleeping_openmp_threads()  # before any command loads torch
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.selftest:
        from anogen.selftest import run_selftest

        return run_selftest()
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except JobCancelled as exc:
        print(f"anogen: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("anogen: interrupted", file=sys.stderr)
        return 130
    except AnoGenError as exc:
        print(f"anogen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
