"""Commit annotations read by a format module into a project, all or nothing.

Two phases, so that nothing is half-imported:

1. *stage*: map every label to a defect kind (an unmapped label is an error naming the
   file and the shape), unite the masks of labels that map to the same kind, and write
   each mask (and each embedded image) into a temporary folder outside the project;
   every problem of the whole source is reported before the project is touched;
2. *commit*: add the missing kinds and the support images through the
   :class:`~anogen.data.workspace.Workspace` API (which copies them in atomically and
   checks sizes and paths), then save the manifest once. If anything fails on the way,
   the in-memory project is put back as it was and the files copied so far are
   deleted, so the saved project is the old one and no stray files remain.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anogen.data.annotations import AnnotationError, LabelledImage
from anogen.data.imageio import write_mask
from anogen.data.safe_names import safe_stem
from anogen.data.workspace import Workspace
from anogen.errors import InputError

SKIP = "-"  # a --map target that leaves a label out


@dataclass
class LabelMap:
    """Which defect kind each label becomes: one kind for every label, or a table.

    In a table, a label mapped to :data:`SKIP` is left out; any label missing from the
    table is an error (a typo must not silently drop annotations).
    """

    kind: str | None = None
    table: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> LabelMap:
        """``"scratch=scratch,hole=hole,other=-"`` as a table."""
        table: dict[str, str] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            label, sep, kind = item.partition("=")
            if not sep or not label.strip() or not kind.strip():
                raise InputError(f"--map {text!r}: write LABEL=KIND pairs separated by commas "
                                 f"(KIND '{SKIP}' leaves the label out), e.g. scratch=scratch,hole=hole")
            table[label.strip()] = kind.strip()
        if not table:
            raise InputError("--map is empty")
        return cls(table=table)

    def kind_for(self, label: str) -> str | None:
        """The kind of ``label`` (None: skip it); raises KeyError when the table lacks it."""
        if self.kind is not None:
            return self.kind
        target = self.table[label]
        return None if target == SKIP else target


@dataclass
class ImportResult:
    """What was imported: support images per defect kind, and the kinds created."""

    counts: dict[str, int]
    created_kinds: list[str]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class _Staged:
    kind: str
    image: Path
    mask: Path


def _stage(records: Sequence[LabelledImage], labels: LabelMap, folder: Path) -> list[_Staged]:
    problems: list[str] = []
    staged: list[_Staged] = []
    for number, record in enumerate(records):
        by_kind: dict[str, np.ndarray] = {}
        for label, mask in record.masks.items():
            try:
                kind = labels.kind_for(label)
            except KeyError:
                known = ", ".join(sorted(labels.table))
                problems.append(f"{record.where}: {record.entries.get(label, 'a shape')}: unknown label {label!r} "
                                f"(--map names {known}; map it to a kind or to '{SKIP}')")
                continue
            if kind is not None:
                by_kind[kind] = by_kind[kind] | mask if kind in by_kind else mask
        if not by_kind:
            continue
        image = record.image
        if record.image_data is not None:  # embedded in the annotation file: give it a real file
            image = folder / f"{number:05d}" / record.image.name
            image.parent.mkdir()
            image.write_bytes(record.image_data)
        for kind, mask in by_kind.items():
            mask_path = folder / f"{number:05d}_{safe_stem(kind)}_mask.png"
            write_mask(mask_path, mask)
            staged.append(_Staged(kind=kind, image=image, mask=mask_path))
    if problems:
        raise AnnotationError(problems)
    return staged


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def import_records(workspace: Workspace, records: Sequence[LabelledImage], labels: LabelMap,
                   init_words: Mapping[str, str] | None = None) -> ImportResult:
    """Add every record as support images of their kinds and save the project, all or nothing.

    Kinds that do not exist yet are created (init word: ``init_words[kind]``, else the
    kind's name when it is one word, else ``defect``).
    """
    if not records:
        raise InputError("the source holds no annotated image")
    workspace.writable_path("support")  # refuses a read-only project before any work
    init_words = dict(init_words or {})
    with tempfile.TemporaryDirectory(prefix="anogen-import-") as tmp:
        staged = _stage(records, labels, Path(tmp))
        if not staged:
            raise InputError("every label was mapped to '-': nothing to import")
        project = workspace.project
        kinds_before = list(project.defect_kinds)
        support_before = {id(k): list(k.support) for k in kinds_before}
        support_root = workspace.root / "support"
        files_before = _files_under(support_root)
        existing = {k.name for k in kinds_before}
        created: list[str] = []
        counts: dict[str, int] = {}
        try:
            for item in staged:
                if item.kind not in existing:
                    word = init_words.get(item.kind) or (item.kind if len(item.kind.split()) == 1 else "defect")
                    workspace.add_defect_kind(item.kind, init_word=word)
                    existing.add(item.kind)
                    created.append(item.kind)
                workspace.add_support_image(item.kind, item.image, item.mask)
                counts[item.kind] = counts.get(item.kind, 0) + 1
            workspace.save()
        except BaseException:
            # Put the project back in place (the GUI holds references to these objects).
            project.defect_kinds[:] = kinds_before
            for kind in kinds_before:
                kind.support[:] = support_before[id(kind)]
            for path in _files_under(support_root) - files_before:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise
    return ImportResult(counts=counts, created_kinds=created)


def import_annotations(workspace: Workspace, fmt: str, source: str | os.PathLike, labels: LabelMap, *,
                       images: str | os.PathLike | None = None) -> ImportResult:
    """Read ``source`` in format ``fmt`` and import it into ``workspace`` (see :func:`import_records`)."""
    from anogen.data.annotations import read_source

    return import_records(workspace, read_source(fmt, source, images), labels)
