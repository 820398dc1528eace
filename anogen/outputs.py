"""The one rule for where a command may write: never replace what the user did not ask to lose.

Every ``anogen`` command that writes an output folder or file checks it here *before*
any work starts:

* a path of the wrong type is refused (``--out photo.png`` where ``photo.png`` is a
  file never becomes a folder; ``--json DIR`` where ``DIR`` is a folder is refused);
* an output that is, contains or lies inside one of the command's inputs is refused,
  even with ``--overwrite``: replacing it would delete the input;
* an existing, non-empty folder is replaced only when anogen wrote it (it holds the
  marker file :data:`MARKER_NAME`, written by the same command) or the user passed
  ``--overwrite``; an existing file only when it is recognisably anogen's output (the
  command passes a ``recognise`` test) or with ``--overwrite``.

The marker is a small JSON file (``{"command": "generate", "anogen": "0.1"}``) written
into each output folder a command creates, so re-running a command into its own
output keeps working without ``--overwrite``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from anogen.atomic import atomic_write_json
from anogen.errors import InputError

MARKER_NAME = ".anogen-output"
OVERWRITE_HINT = "choose another output or pass --overwrite to replace it"


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def read_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of an anogen output folder, or None when there is none (or it is damaged)."""
    try:
        data = json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def mark_output_dir(folder: str | os.PathLike, command: str, **fields: Any) -> None:
    """Record that ``command`` wrote ``folder`` (so a re-run may replace it)."""
    from anogen import __version__

    atomic_write_json(Path(folder) / MARKER_NAME, {"command": command, "anogen": __version__, **fields})


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], *,
                    option: str = "--out") -> None:
    """Refuse an output that is, contains or lies inside an input of the same command.

    Applies with ``--overwrite`` too: replacing the output would delete the input.
    """
    target = _resolved(out)
    for given in inputs:
        if given is None:
            continue
        source = _resolved(given)
        if target == source:
            raise InputError(f"{out}: {option} is also an input of this command ({given}); choose another output")
        if _is_within(source, target):
            raise InputError(f"{out}: {option} contains the input {given}; replacing it would delete the input, "
                             "choose another output")
        if source.is_dir() and _is_within(target, source):
            raise InputError(f"{out}: {option} lies inside the input folder {given}; choose an output outside it")


def check_output_dir(out: str | os.PathLike, command: str, *, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike | None] = (), option: str = "--out",
                     recognise: Callable[[Path], bool] | None = None, hint: str = OVERWRITE_HINT) -> None:
    """Check that ``command`` may write (and later replace) the output folder ``out``.

    ``recognise`` may accept folders anogen wrote before it had markers (e.g. a training
    run's ``last/``). ``hint`` ends a refusal (the app has no ``--overwrite``). Raises
    :class:`~anogen.errors.InputError` with a one-line reason.
    """
    path = Path(out)
    check_not_input(path, inputs, option=option)
    if path.exists() and not path.is_dir():
        raise InputError(f"{out}: {option} must be a folder, but this is a file; choose a folder name")
    if overwrite or not path.is_dir() or not any(path.iterdir()):
        return
    marker = read_marker(path)
    if marker is not None:
        if marker.get("command") == command:
            return
        raise InputError(f"{out}: holds the output of 'anogen {marker.get('command')}', not of "
                         f"'anogen {command}'; {hint}")
    if recognise is not None and recognise(path):
        return
    raise InputError(f"{out}: already exists and holds files anogen did not write; {hint}")


def check_output_file(out: str | os.PathLike, *, overwrite: bool = False,
                      inputs: Iterable[str | os.PathLike | None] = (), option: str = "--out",
                      recognise: Callable[[Path], bool] | None = None) -> None:
    """Check that a command may write the output file ``out`` (before the work starts).

    An existing file is replaced when ``recognise`` says anogen wrote it, or with
    ``overwrite``. A file inside an input folder is fine (nothing is deleted), the same
    file as an input is not.
    """
    path = Path(out)
    target = _resolved(path)
    for given in inputs:
        if given is not None and _resolved(given) == target:
            raise InputError(f"{out}: {option} is also an input of this command; choose another file")
    if path.is_dir():
        raise InputError(f"{out}: {option} must be a file, but this is a folder; give a file name inside it")
    if path.exists() and not path.is_file():
        raise InputError(f"{out}: {option} exists and is not a regular file")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{out}: {parent} is a file, not a folder")
    if overwrite or not path.exists():
        return
    if recognise is not None and recognise(path):
        return
    raise InputError(f"{out}: already exists and anogen did not write it; {OVERWRITE_HINT}")


def is_json_with_keys(*keys: str) -> Callable[[Path], bool]:
    """A ``recognise`` test: a JSON object file holding all of ``keys``."""

    def test(path: Path) -> bool:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(data, dict) and all(key in data for key in keys)

    return test


def has_files(*names: str) -> Callable[[Path], bool]:
    """A ``recognise`` test for output folders written before they had markers: all of
    ``names`` are in the folder (e.g. a generated set's ``manifest.jsonl`` and ``images/``)."""

    def test(path: Path) -> bool:
        return all((path / name).exists() for name in names)

    return test


def add_overwrite_argument(parser: Any) -> None:
    """The same ``--overwrite`` flag on every command that writes."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output that anogen did not write (never an input)")
