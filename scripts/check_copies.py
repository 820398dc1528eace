"""Check that every deliberate copy still equals its source (the diffusers ``# Copied from`` convention).

Prefer an import. Where a copy is the better choice (a script or test that must stand alone, a
module that must not import a heavy one), mark it on the line above its ``def``/``class`` (above
its first decorator, if any)::

    # Copied from anogen.metrics.f1_max
    def f1_max(...):

    # Copied from anogen.detection.draem.model.Draem.forward with Draem->Student, draem->student
    def forward(self, ...):

The target is a dotted path: a module of this repository (``anogen.x.y``, ``app.x``,
``tests.x``, ``benchmarks.x``, ``scripts.x``) followed by the function or class, and for a method
the class and the method. ``with old->new, ...`` lists text replacements applied to the source,
in order, before the comparison. Indentation may differ; everything else must match, comments and
docstrings included.

    python scripts/check_copies.py          # exit 1 and list the copies that drifted
    python scripts/check_copies.py --fix    # rewrite each copy from its source

Run by ``.ci/run``.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("anogen", "app", "tests", "scripts", "benchmarks")
MARKER = re.compile(r"^(?P<indent>[ \t]*)# Copied from (?P<target>[A-Za-z_][\w.]*)"
                    r"(?:\s+with\s+(?P<replacements>.+?))?\s*$")

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


class CopyError(Exception):
    """A marker that cannot be checked: its target or its copy is missing."""


@dataclass
class Copy:
    path: Path
    marker_line: int  # 1-based line of the "# Copied from" comment
    target: str
    replacements: list[tuple[str, str]]
    start: int  # 1-based first line of the copy (its first decorator, or def/class)
    end: int  # 1-based last line of the copy
    indent: str


def _start(node: Definition) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def _definitions(tree: ast.AST) -> list[Definition]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]


def _replacements(text: str | None, where: str) -> list[tuple[str, str]]:
    if not text:
        return []
    pairs = []
    for item in text.split(","):
        old, arrow, new = item.strip().partition("->")
        if not arrow or not old:
            raise CopyError(f"{where}: replacement '{item.strip()}' is not old->new")
        pairs.append((old, new))
    return pairs


def find_copies(path: Path) -> list[Copy]:
    """The marked copies in one file."""
    text = path.read_text(encoding="utf-8")
    if "# Copied from" not in text:
        return []
    # Real comments only (tokenize), on a line of their own: not the words inside a string.
    marked = [(token.start[0], match) for token in tokenize.generate_tokens(io.StringIO(text).readline)
              if token.type == tokenize.COMMENT and (match := MARKER.match(token.line.rstrip("\r\n")))]
    if not marked:
        return []
    by_start = {_start(node): node for node in _definitions(ast.parse(text, str(path)))}
    copies = []
    for number, match in marked:
        where = f"{path}:{number}"
        node = by_start.get(number + 1)
        if node is None:
            raise CopyError(f"{where}: '# Copied from' must be the line just above a def or class (or its decorator)")
        copies.append(Copy(path, number, match["target"], _replacements(match["replacements"], where),
                           number + 1, node.end_lineno or node.lineno, match["indent"]))
    return copies


def _module_file(root: Path, parts: list[str]) -> tuple[Path, list[str]]:
    """The file of the longest module prefix of ``parts``, and the object path after it."""
    for cut in range(len(parts) - 1, 0, -1):
        base = root.joinpath(*parts[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, parts[cut:]
    raise CopyError(f"no module of this repository in '{'.'.join(parts)}'")


def source_text(root: Path, target: str) -> str:
    """The dedented source of ``target`` (decorators included)."""
    path, names = _module_file(root, target.split("."))
    text = path.read_text(encoding="utf-8")
    scope: list[ast.stmt] = ast.parse(text, str(path)).body
    node: Definition | None = None
    for name in names:
        node = next((n for n in scope if isinstance(n, Definition) and n.name == name), None)
        if node is None:
            raise CopyError(f"'{target}': no '{name}' in {path.relative_to(root)}")
        scope = node.body
    assert node is not None
    lines = text.splitlines()[_start(node) - 1:node.end_lineno]
    return textwrap.dedent("\n".join(lines))


def expected_text(root: Path, copy: Copy) -> str:
    """What the copy should read, dedented: its source with the replacements applied."""
    text = source_text(root, copy.target)
    for old, new in copy.replacements:
        text = text.replace(old, new)
    return text


def _copy_text(copy: Copy) -> str:
    lines = copy.path.read_text(encoding="utf-8").splitlines()[copy.start - 1:copy.end]
    return textwrap.dedent("\n".join(lines))


def _normalised(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def check(root: Path, paths: list[Path], fix: bool = False) -> list[str]:
    """Problems found (after fixing, with ``fix``): one line each."""
    problems = []
    for path in paths:
        try:
            copies = find_copies(path)
        except CopyError as exc:
            problems.append(str(exc))
            continue
        stale = []
        for copy in copies:
            where = f"{path.relative_to(root)}:{copy.marker_line}"
            try:
                expected = expected_text(root, copy)
            except CopyError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if _normalised(expected) != _normalised(_copy_text(copy)):
                stale.append((copy, expected))
                if not fix:
                    problems.append(f"{where}: differs from {copy.target} (python scripts/check_copies.py --fix)")
        if fix and stale:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            for copy, expected in sorted(stale, key=lambda item: item[0].start, reverse=True):
                new = textwrap.indent(expected, copy.indent, lambda line: bool(line.strip()))
                lines[copy.start - 1:copy.end] = [new.rstrip("\n") + "\n"]
            path.write_text("".join(lines), encoding="utf-8")
    return problems


def python_files(root: Path) -> list[Path]:
    return sorted(p for folder in FOLDERS if (root / folder).is_dir() for p in (root / folder).rglob("*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check (or --fix) the '# Copied from' blocks.")
    parser.add_argument("--fix", action="store_true", help="rewrite each stale copy from its source")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    files = python_files(root)
    problems = check(root, files, fix=args.fix)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        count = sum(len(find_copies(path)) for path in files)
        print(f"check_copies: {count} marked cop{'y' if count == 1 else 'ies'}, all equal to their source")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
