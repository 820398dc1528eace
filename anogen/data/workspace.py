"""The project folder the GUI edits: a manifest plus the images it references.

Layout (a folder the user can zip and move)::

    project.json          the manifest (see anogen.data.project_file), schema-versioned
    images/good/          good images copied into the project
    support/<kind>/       real defect photos of each kind and their painted masks (PNG)
    embeddings/           learned defect embeddings (stage 1), <kind>.safetensors
    generated/<set>/      generated sets (stage 2): images/, masks/, manifest.jsonl
    detectors/<name>/     trained detectors (stage 3) with their metrics
    anogen.log            the log of jobs run on this project

Every path in the manifest is relative to the project folder and may not leave it
(``..``, absolute paths, symlinks pointing out), except paths inside a dataset folder the
user linked explicitly with :meth:`Workspace.link_dataset`. A linked dataset inside the
project is stored relative too, so the project still opens after a move or a copy; one
outside it is stored absolute, and :meth:`Workspace.relink_dataset` points it elsewhere
when it moved.

Linked datasets are read-only: the library writes only inside the project folder and
outside every linked dataset (:meth:`Workspace.writable_path`), whatever the manifest
says. A mask painted on an image that lives in a linked dataset goes into the project.

One process writes a project at a time. Opening takes the project's lock
(:mod:`anogen.data.project_lock`); a second process opens it read-only, or with
``read_only=False`` is refused with :class:`ProjectLockedError` naming the holder.
A read-only workspace refuses every write with :class:`ReadOnlyProjectError`.

Methods change the in-memory :attr:`Workspace.project` and write the image files they
need; :meth:`Workspace.save` writes the manifest. Every file is written atomically
(temporary file, fsync, ``os.replace``), so a crash or a kill at any moment leaves either
the old manifest or the new one. Files a removed record pointed at are left in place:
deleting them before the manifest is saved could break the saved project.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Self

import numpy as np

from anogen.atomic import atomic_write_bytes, atomic_write_json
from anogen.data.box import Box
from anogen.data.imageio import (
    IMAGE_SUFFIXES,
    image_size,
    list_images,
    read_image,
    read_mask,
    write_mask,
)
from anogen.data.project_file import (
    MANIFEST_NAME,
    SAMPLE_STATUSES,
    DefectKind,
    DetectorEntry,
    GeneratedSample,
    GeneratedSet,
    GoodImage,
    Project,
    ProjectFileError,
    SupportImage,
    decode_project,
    project_to_dict,
)
from anogen.data.project_lock import (
    LockHolder,
    ProjectLock,
    ProjectLockedError,
    ReadOnlyProjectError,
)
from anogen.data.safe_names import safe_stem
from anogen.errors import InputError, WorkspaceError

__all__ = [
    "DefectKind", "DetectorEntry", "GeneratedSample", "GeneratedSet", "GoodImage", "Project",
    "SupportImage", "Workspace", "WorkspaceError", "MANIFEST_NAME", "ProjectLockedError",
    "ReadOnlyProjectError",
]

log = logging.getLogger(__name__)

GOOD_IMAGES_DIR = "images/good"
SUPPORT_DIR = "support"
EMBEDDINGS_DIR = "embeddings"
GENERATED_DIR = "generated"
DETECTORS_DIR = "detectors"
LOG_NAME = "anogen.log"
# Top-level folders the project writes into itself; never part of a linked dataset.
_OWN_FOLDERS = {"images", SUPPORT_DIR, EMBEDDINGS_DIR, GENERATED_DIR, DETECTORS_DIR}

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MAX_PATH_CHARS = 4096  # longer manifest paths are refused before the OS sees them


def _check_name(name: str, what: str) -> str:
    """Names become folder names, so keep them to letters, digits, space, '.', '_' and '-'."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name) or name.endswith((" ", ".")):
        raise InputError(f"{what} {name!r}: use 1-64 letters, digits, spaces, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()).strip("_").lower() or "item"


@dataclass
class _PathCheck:
    path: Path | None
    problem: str | None


class Workspace:
    """An open project folder. Create with :meth:`create`, open with :meth:`open`.

    Use it as a context manager, or call :meth:`close`, to give the project's lock back
    as soon as you are done; otherwise it is released when the object is collected or the
    process exits.
    """

    def __init__(self, root: Path, project: Project, *, read_only: bool = False) -> None:
        self.root = Path(root).absolute()
        self.project = project
        self.problems: list[str] = []  # file problems found by a non-strict open
        self.warnings: list[str] = []  # what open ignored or repaired (bad GUI state, a moved dataset)
        self.read_only = read_only
        self.lock_holder: LockHolder | None = None  # who holds the project when we opened it read-only
        self._lock = threading.RLock()  # the GUI autosaves from one thread while jobs report from another
        self._project_lock = ProjectLock(self.root)
        self._release = weakref.finalize(self, self._project_lock.release)
        self._closed = False

    # ------------------------------------------------------------------ folders

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def embeddings_dir(self) -> Path:
        return self.root / EMBEDDINGS_DIR

    @property
    def generated_dir(self) -> Path:
        return self.root / GENERATED_DIR

    @property
    def detectors_dir(self) -> Path:
        return self.root / DETECTORS_DIR

    @property
    def log_path(self) -> Path:
        return self.root / LOG_NAME

    # ------------------------------------------------------------------ create, open, save, close

    @classmethod
    def create(cls, root: str | os.PathLike, name: str) -> Workspace:
        """Make a new project in ``root`` (a new or empty folder), lock it and save its manifest."""
        root = Path(root).absolute()
        if (root / MANIFEST_NAME).exists():
            raise InputError(f"{root}: already holds a project ({MANIFEST_NAME} exists)")
        if root.exists() and not root.is_dir():
            raise InputError(f"{root}: exists and is not a folder")
        if root.is_dir() and any(root.iterdir()):
            raise InputError(f"{root}: folder is not empty; choose a new or empty folder for the project")
        if not isinstance(name, str) or not name.strip():
            raise InputError("a project needs a non-empty name")
        for folder in (GOOD_IMAGES_DIR, SUPPORT_DIR, EMBEDDINGS_DIR, GENERATED_DIR, DETECTORS_DIR):
            (root / folder).mkdir(parents=True, exist_ok=True)
        workspace = cls(root, Project(name=name.strip()))
        workspace._project_lock.acquire()
        workspace.save()
        return workspace

    @classmethod
    def open(cls, root: str | os.PathLike, strict: bool = True, *,
             read_only: bool | None = None) -> Workspace:
        """Open and validate a project; raise :class:`WorkspaceError` listing every problem.

        With ``strict=False`` a manifest that decodes cleanly opens even when files are
        missing or wrong (a moved dataset, a deleted image): the problems are kept in
        :attr:`problems` for the GUI to show and fix. A manifest that does not decode
        always raises, because saving it back would drop the broken records.

        ``read_only``: ``None`` (the default) takes the project's lock when it is free and
        otherwise opens read-only, with :attr:`lock_holder` naming the process that has it;
        ``False`` takes the lock or raises :class:`ProjectLockedError`; ``True`` never
        takes it. A read-only workspace refuses every write.
        """
        root = Path(root).absolute()
        manifest = root / MANIFEST_NAME
        if not root.is_dir():
            raise WorkspaceError(root, ["folder not found"])
        if not manifest.is_file():
            raise WorkspaceError(root, [f"not an AnoGen project (no {MANIFEST_NAME})"])
        lock = ProjectLock(root)
        holder: LockHolder | None = None
        if read_only is not True:
            try:
                lock.acquire()  # before reading, so we read what the previous writer saved last
            except ProjectLockedError as exc:
                if read_only is False:
                    raise
                holder = exc.holder
        try:
            workspace = cls._load(root, strict, read_only=not lock.held)
        except BaseException:
            lock.release()
            raise
        workspace.lock_holder = holder
        # The new workspace holds the lock from here on; `lock` only carried it across the load.
        if lock.held:
            workspace._project_lock.acquire()
            lock.release()
        return workspace

    @classmethod
    def _load(cls, root: Path, strict: bool, read_only: bool) -> Workspace:
        manifest = root / MANIFEST_NAME
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise WorkspaceError(root, [f"{MANIFEST_NAME} is not UTF-8 text ({exc.reason})"]) from None
        except json.JSONDecodeError as exc:
            raise WorkspaceError(root, [f"{MANIFEST_NAME} is not valid JSON (line {exc.lineno} "
                                        f"column {exc.colno}: {exc.msg})"]) from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise WorkspaceError(root, [f"{MANIFEST_NAME} is not a valid project file ({exc})"]) from None
        except RecursionError:
            deep = f"{MANIFEST_NAME} nests lists or objects too deeply to be an AnoGen project"
            raise WorkspaceError(root, [deep]) from None
        notes: list[str] = []
        try:
            project, problems = decode_project(data, MANIFEST_NAME, notes)
        except ProjectFileError as exc:
            raise WorkspaceError(root, exc.problems) from None
        workspace = cls(root, project, read_only=read_only)
        workspace.warnings = notes
        workspace._adopt_datasets_inside()
        file_problems = workspace.validate()  # the file checks run on every record that decoded
        if problems or (strict and file_problems):
            raise WorkspaceError(root, problems + file_problems)
        workspace.problems = file_problems
        for warning in workspace.warnings:
            log.warning("project %s: %s", root, warning)
        return workspace

    def read_only_reason(self) -> str:
        """Why this workspace is read-only, for a message ("" when it is not)."""
        if not self.read_only:
            return ""
        if self.lock_holder is not None:
            return f"read-only: opened by pid {self.lock_holder.pid} on host {self.lock_holder.host}"
        return "read-only"

    def _require_writable(self) -> None:
        if self._closed:
            raise ReadOnlyProjectError(f"project {self.root} was closed; open it again to change it")
        if self.read_only:
            raise ReadOnlyProjectError(f"project {self.root} is open {self.read_only_reason()}; "
                                       "nothing was written. Close it in the other process and reopen it here.")

    def save(self) -> None:
        """Write the manifest atomically: readers see the old file or the new one, never a mix.

        Refused in a read-only workspace, and when the lock file no longer names this
        process (deleted by hand and taken by another one): writing then would throw
        that process's changes away.
        """
        self._require_writable()
        with self._lock:
            if not self._project_lock.still_held():
                self._project_lock.release()
                try:
                    self._project_lock.acquire()  # the lock file was deleted: take it again
                except ProjectLockedError as exc:
                    raise ProjectLockedError(self.root, self._project_lock.path, exc.holder) from None
            atomic_write_json(self.manifest_path, project_to_dict(self.project))

    def close(self) -> None:
        """Give the project's lock back; the workspace then refuses further writes."""
        self._release()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ paths

    def _linked_roots(self) -> list[Path]:
        """The real folders of the linked datasets (relative entries lie inside the project)."""
        roots = []
        for folder in self.project.linked_datasets:
            try:
                roots.append(Path(os.path.realpath(self.root / folder)))  # an absolute entry replaces root
            except (OSError, ValueError):
                continue  # validate() reports it
        return roots

    def _check_path(self, rel: str) -> _PathCheck:
        if not isinstance(rel, str) or not rel:
            return _PathCheck(None, "empty path")
        if _CONTROL_CHARS.search(rel):
            return _PathCheck(None, f"{rel[:60]!r} contains control characters")
        if len(rel) > _MAX_PATH_CHARS:
            return _PathCheck(None, f"{rel[:60]!r}... is longer than {_MAX_PATH_CHARS} characters")
        if "\\" in rel:
            return _PathCheck(None, f"{rel!r}: write paths with '/', not '\\'")
        posix = PurePosixPath(rel)
        escapes = posix.is_absolute() or PureWindowsPath(rel).drive != "" or ".." in posix.parts
        candidate = Path(rel) if posix.is_absolute() else self.root / posix
        try:
            real = Path(os.path.realpath(candidate))
        except (OSError, ValueError) as exc:
            return _PathCheck(None, f"{rel!r} is not a usable path ({exc})")
        if any(real.is_relative_to(linked) for linked in self._linked_roots()):
            return _PathCheck(candidate, None)  # inside a dataset the user linked explicitly
        if escapes:
            return _PathCheck(None, f"{rel!r} leaves the project folder (absolute paths and '..' are "
                                    "only allowed inside a linked dataset folder)")
        if not real.is_relative_to(Path(os.path.realpath(self.root))):
            return _PathCheck(None, f"{rel!r} is a symbolic link that leads outside the project folder")
        return _PathCheck(candidate, None)

    def _write_problem(self, rel: str) -> str | None:
        """Why the library may not write ``rel`` (``None`` when it may): it must lie inside the
        project folder, after following symlinks, and outside every linked dataset."""
        check = self._check_path(rel)
        if check.problem is not None:
            return check.problem
        assert check.path is not None
        real = Path(os.path.realpath(check.path))
        if any(real.is_relative_to(linked) for linked in self._linked_roots()):
            return f"{rel!r} is in a linked dataset folder, which the project only reads"
        if not real.is_relative_to(Path(os.path.realpath(self.root))):
            return f"{rel!r} is outside the project folder {self.root}"
        return None

    def _own_path(self, rel: str) -> Path:
        """The path of something the project owns and rewrites (an embedding, a generated set,
        a detector): inside the project folder and outside every linked dataset."""
        problem = self._write_problem(rel)
        if problem is not None:
            raise InputError(f"project {self.root}: {problem}")
        return self.root / PurePosixPath(rel)

    def resolve(self, rel: str) -> Path:
        """The absolute path of a manifest path, for reading; refuses any path that escapes the
        project (a linked dataset is allowed)."""
        check = self._check_path(rel)
        if check.problem is not None:
            raise InputError(f"project {self.root}: {check.problem}")
        assert check.path is not None
        return check.path

    def writable_path(self, rel: str) -> Path:
        """The absolute path of a manifest path, for writing: only inside the project folder,
        never in a linked dataset, never in a read-only workspace. Every file the library
        writes into a project goes through here; tools that write into it should too."""
        self._require_writable()
        problem = self._write_problem(rel)
        if problem is not None:
            raise InputError(f"project {self.root}: will not write there: {problem}")
        return self.root / PurePosixPath(rel)

    def relative(self, path: str | os.PathLike) -> str:
        """The manifest string for a file: relative inside the project, absolute in a linked dataset."""
        path = Path(os.path.abspath(path))
        if path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        real = Path(os.path.realpath(path))
        real_root = Path(os.path.realpath(self.root))
        if real.is_relative_to(real_root):  # the same file reached through a symlinked parent
            return real.relative_to(real_root).as_posix()
        for folder, linked in zip(self.project.linked_datasets, self._linked_roots()):
            if real.is_relative_to(linked):
                return (Path(folder) / real.relative_to(linked)).as_posix()
        raise InputError(f"{path} is outside the project {self.root} and not in a linked dataset folder")

    # ------------------------------------------------------------------ linked datasets

    def _linked_problem(self, folder: str) -> str | None:
        """Why ``folder`` (a ``linked_datasets`` entry) is not a usable linked dataset."""
        if _CONTROL_CHARS.search(folder) or len(folder) > _MAX_PATH_CHARS:
            return f"{folder[:60]!r} is not a usable folder name"
        relative = not PurePosixPath(folder).is_absolute() and not PureWindowsPath(folder).drive
        if relative and self._check_path(folder).problem is not None:  # a dataset inside the project
            return f"{folder!r} must be a folder inside the project or an absolute path"
        path = self.root / folder
        try:
            real = Path(os.path.realpath(path))
            found = path.is_dir()
        except (OSError, ValueError) as exc:
            return f"{folder[:60]!r} is not a usable folder ({exc})"
        real_root = Path(os.path.realpath(self.root))
        # Linked datasets are read-only: one holding the project, or one of its own
        # folders, would forbid every write the project makes.
        if real_root.is_relative_to(real):
            return f"linked dataset folder {folder} contains the project folder itself"
        if real.is_relative_to(real_root) and real.relative_to(real_root).parts[0] in _OWN_FOLDERS:
            return f"linked dataset folder {folder} is one of the project's own folders"
        if not found:
            return f"linked dataset folder {folder} not found"
        return None

    def linked_dataset_folders(self) -> list[Path]:
        """The linked dataset folders as absolute paths (entries inside the project are stored
        relative to it, so never read ``project.linked_datasets`` as paths directly)."""
        return [self.root / folder for folder in self.project.linked_datasets]

    def missing_linked_datasets(self) -> list[str]:
        """The linked dataset folders that are not there (moved or deleted), for the GUI to
        ask the user where they went and call :meth:`relink_dataset`."""
        return [folder for folder in self.project.linked_datasets if not (self.root / folder).is_dir()]

    def _adopt_datasets_inside(self) -> None:
        """Turn absolute linked datasets that belong to this project folder into relative ones.

        Projects written before linked datasets were stored relative (the demo project keeps
        its dataset inside) hold an absolute path to the dataset. After a move that path is
        gone; after a copy it still points at the original, which the copy would then use
        silently. Either way, when the same dataset lies at the same place inside this
        project, with every file the manifest names from it, the link is re-pointed here.
        """
        real_root = Path(os.path.realpath(self.root))
        for folder in list(self.project.linked_datasets):
            path = Path(folder)
            if not path.is_absolute() or _CONTROL_CHARS.search(folder) or ".." in path.parts:
                continue
            try:
                if Path(os.path.realpath(path)).is_relative_to(real_root):
                    target: str | None = Path(os.path.realpath(path)).relative_to(real_root).as_posix()
                else:
                    target = self._copy_inside(path)
            except (OSError, ValueError):
                continue
            if (target is None or target == "." or not (self.root / target).is_dir()
                    or not self._dataset_files_present(folder, target)):
                continue
            self.relink_dataset(folder, self.root / target)
            if not Path(os.path.realpath(path)).is_relative_to(real_root):
                self.warnings.append(f"linked dataset {folder} now points at {target} inside the project "
                                     "(the project was moved or copied)")

    def _copy_inside(self, linked: Path) -> str | None:
        """Where an outside dataset path lies in this project when it lay inside the project's
        old location: the longest tail of ``linked`` that is a folder here."""
        parts = linked.parts
        for start in range(1, len(parts)):
            tail = PurePosixPath(*parts[start:])
            if not (self.root / tail).is_dir():
                continue
            old_root = Path(*parts[:start])
            # A dataset that still exists is re-pointed only when it lived in a project
            # folder (a copy); one the user linked from elsewhere on purpose is kept.
            if linked.is_dir() and not (old_root / MANIFEST_NAME).is_file():
                return None
            return tail.as_posix()
        return None

    def _dataset_files_present(self, old: str, new: str) -> bool:
        """True when every manifest path under ``old`` exists under ``new`` (relative to the project)."""
        prefix = old.rstrip("/") + "/"
        for path in self._paths_in_records():
            if path.startswith(prefix) and not (self.root / new / path[len(prefix):]).exists():
                return False
        return True

    def _paths_in_records(self) -> list[str]:
        paths = [g.image for g in self.project.good_images]
        for kind in self.project.defect_kinds:
            paths += [s.image for s in kind.support] + [s.mask for s in kind.support if s.mask]
        return paths

    # ------------------------------------------------------------------ validation

    def validate(self) -> list[str]:
        """Every problem with the project's files: unsafe or missing paths, size mismatches,
        boxes off their image, duplicate names. An empty list means the project is sound."""
        problems: list[str] = []
        project = self.project

        def existing(rel: str, where: str, folder: bool = False, own: bool = False) -> Path | None:
            """The path of ``rel`` if it is safe and exists; ``own``: the project writes there,
            so it must be inside the project folder and outside the (read-only) linked datasets."""
            check = self._check_path(rel)
            problem = self._write_problem(rel) if own and check.problem is None else check.problem
            if problem is not None:
                problems.append(f"{where}: {problem}")
                return None
            assert check.path is not None
            try:
                found = check.path.is_dir() if folder else check.path.is_file()
            except OSError as exc:  # e.g. a name too long for this file system
                problems.append(f"{where}: {rel[:60]!r} is not a usable path ({exc.strerror})")
                return None
            if not found:
                problems.append(f"{where}: {'folder' if folder else 'file'} {rel!r} not found")
                return None
            return check.path

        def size_of(path: Path, where: str) -> tuple[int, int] | None:
            try:
                return image_size(path)
            except InputError as exc:
                problems.append(f"{where}: {exc}")
                return None

        def duplicates(values: Iterable[str], what: str) -> None:
            seen: set[str] = set()
            for value in values:
                if value in seen:
                    problems.append(f"{what} {value!r} appears more than once")
                seen.add(value)

        for index, folder in enumerate(project.linked_datasets):
            problem = self._linked_problem(folder)
            if problem is not None:
                problems.append(f"linked_datasets[{index}]: {problem}")

        duplicates((k.name for k in project.defect_kinds), "defect kind")
        duplicates((k.token for k in project.defect_kinds), "defect kind token")
        kind_names = {k.name for k in project.defect_kinds}
        for k_index, kind in enumerate(project.defect_kinds):
            where = f"defect_kinds[{k_index}] ({kind.name})"
            if not re.fullmatch(r"<[^<>\s]+>", kind.token):
                problems.append(f"{where}: token {kind.token!r} must look like <name>, without spaces")
            for s_index, support in enumerate(kind.support):
                image_path = existing(support.image, f"{where}.support[{s_index}].image")
                mask_path = existing(support.mask, f"{where}.support[{s_index}].mask") if support.mask else None
                if image_path is not None and mask_path is not None:
                    image_wh = size_of(image_path, f"{where}.support[{s_index}].image")
                    mask_wh = size_of(mask_path, f"{where}.support[{s_index}].mask")
                    if image_wh and mask_wh and image_wh != mask_wh:
                        problems.append(f"{where}.support[{s_index}]: mask {support.mask} is "
                                        f"{mask_wh[0]}x{mask_wh[1]} but image {support.image} is "
                                        f"{image_wh[0]}x{image_wh[1]}")
            if kind.embedding is not None:
                existing(kind.embedding, f"{where}.embedding", own=True)

        duplicates((g.image for g in project.good_images), "good image")
        for g_index, good in enumerate(project.good_images):
            where = f"good_images[{g_index}]"
            path = existing(good.image, f"{where}.image")
            size = size_of(path, f"{where}.image") if path is not None else None
            for b_index, box in enumerate(good.boxes):
                if size is not None and not box.fits(height=size[1], width=size[0]):
                    problems.append(f"{where}.boxes[{b_index}]: box {box.to_list()} lies outside image "
                                    f"{good.image} of {size[0]}x{size[1]}")
                if box.defect_kind and box.defect_kind not in kind_names:
                    problems.append(f"{where}.boxes[{b_index}]: unknown defect kind {box.defect_kind!r}")

        duplicates((g.name for g in project.generated_sets), "generated set")
        for g_index, generated in enumerate(project.generated_sets):
            where = f"generated_sets[{g_index}] ({generated.name})"
            # Generated sets and detectors are the project's own output, rewritten in place
            # (statuses, regenerated samples, retraining): never in a linked dataset.
            existing(generated.folder, f"{where}.folder", folder=True, own=True)
            for s_index, sample in enumerate(generated.samples):
                existing(sample.image, f"{where}.samples[{s_index}].image", own=True)
                existing(sample.mask, f"{where}.samples[{s_index}].mask", own=True)

        duplicates((d.name for d in project.detectors), "detector")
        for d_index, detector in enumerate(project.detectors):
            existing(detector.folder, f"detectors[{d_index}] ({detector.name}).folder", folder=True, own=True)
        return problems

    # ------------------------------------------------------------------ images

    def import_image(self, src: str | os.PathLike, subdir: str) -> str:
        """Copy an image into ``subdir`` of the project under a name not yet taken.

        The file is read first so a corrupt image is refused with its path; its bytes are
        copied unchanged (no re-encoding). The copy keeps the file's name, in any script;
        only characters no file system takes are replaced (see :mod:`anogen.data.safe_names`).
        Returns the manifest path of the copy.
        """
        src = Path(src)
        if src.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{src}: unsupported image type '{src.suffix}'")
        read_image(src)
        folder = self.writable_path(subdir)
        folder.mkdir(parents=True, exist_ok=True)
        stem, suffix = safe_stem(src.stem), src.suffix.lower()
        with self._lock:
            target = folder / f"{stem}{suffix}"
            counter = 1
            while target.exists() or target.with_name(f"{target.stem}_mask.png").exists():
                target = folder / f"{stem}_{counter}{suffix}"
                counter += 1
            atomic_write_bytes(target, src.read_bytes())
        return self.relative(target)

    # ------------------------------------------------------------------ defect kinds

    def add_defect_kind(self, name: str, init_word: str = "defect") -> DefectKind:
        """Add a defect kind with a placeholder token unique in the project, e.g. ``<scratch>``."""
        _check_name(name, "defect kind")
        if not isinstance(init_word, str) or not init_word.strip() or len(init_word.split()) != 1:
            raise InputError(f"init word {init_word!r}: give one plain word, e.g. 'scratch' or 'defect'")
        with self._lock:
            if any(k.name == name for k in self.project.defect_kinds):
                raise InputError(f"defect kind {name!r} already exists")
            taken = {k.token for k in self.project.defect_kinds}
            base = _slug(name).replace(".", "_")
            token, counter = f"<{base}>", 2
            while token in taken:
                token, counter = f"<{base}_{counter}>", counter + 1
            kind = DefectKind(name=name, token=token, init_word=init_word.strip())
            self.project.defect_kinds.append(kind)
        return kind

    def remove_defect_kind(self, name: str) -> None:
        with self._lock:
            kind = self.project.defect_kind(name)
            self.project.defect_kinds.remove(kind)

    def _support_folder(self, kind: DefectKind) -> str:
        return f"{SUPPORT_DIR}/{_slug(kind.name)}"

    def add_support_image(self, kind: str, src: str | os.PathLike,
                          mask_src: str | os.PathLike | None = None) -> SupportImage:
        """Copy a defect photo (and optionally its mask, checked against the image size) into the kind."""
        defect = self.project.defect_kind(kind)
        mask = None
        if mask_src is not None:
            height, width = read_image(src).shape[:2]
            mask = read_mask(mask_src, expected_size=(height, width), image_path=src)
        image_rel = self.import_image(src, self._support_folder(defect))
        support = SupportImage(image=image_rel)
        if mask is not None:
            support.mask = self._write_mask_for(defect, support, mask)
        with self._lock:
            defect.support.append(support)
        return support

    def _mask_target(self, kind: DefectKind, support: SupportImage) -> str:
        """Where the mask of ``support`` is written: its current mask file when the project may
        write it, else next to the image, else (the image is in a linked dataset, which is
        read-only, or outside) a new file in the kind's support folder."""
        if support.mask and self._write_problem(support.mask) is None:
            return support.mask
        image = PurePosixPath(support.image)
        beside = str(image.with_name(f"{image.stem}_mask.png"))
        if self._write_problem(beside) is None:
            return beside
        folder = self._support_folder(kind)
        stem = safe_stem(image.stem)
        taken = {s.mask for k in self.project.defect_kinds for s in k.support}
        target, counter = f"{folder}/{stem}_mask.png", 1
        while target in taken or (self.root / target).exists():
            target, counter = f"{folder}/{stem}_{counter}_mask.png", counter + 1
        return target

    def _write_mask_for(self, kind: DefectKind, support: SupportImage, mask: np.ndarray) -> str:
        with self._lock:  # choosing a free name and writing it must not interleave
            mask_rel = self._mask_target(kind, support)
            write_mask(self.writable_path(mask_rel), mask)
        return mask_rel

    def write_support_mask(self, kind: str, index: int, mask: np.ndarray) -> str:
        """Save the painted mask of support image ``index`` as a PNG the size of the image."""
        defect = self.project.defect_kind(kind)
        if not 0 <= index < len(defect.support):
            raise InputError(f"defect kind {kind!r} has no support image #{index}")
        support = defect.support[index]
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise InputError(f"a mask must be a 2-D array, got shape {mask.shape}")
        width, height = image_size(self.resolve(support.image))
        if mask.shape != (height, width):
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but support image "
                             f"{support.image} is {width}x{height}")
        mask_rel = self._write_mask_for(defect, support, mask)
        with self._lock:
            support.mask = mask_rel
        return mask_rel

    def remove_support_image(self, kind: str, index: int) -> None:
        defect = self.project.defect_kind(kind)
        if not 0 <= index < len(defect.support):
            raise InputError(f"defect kind {kind!r} has no support image #{index}")
        with self._lock:
            del defect.support[index]

    def set_embedding(self, kind: str, path: str | os.PathLike) -> None:
        """Record the learned embedding file of a defect kind (a file inside the project)."""
        defect = self.project.defect_kind(kind)
        rel = self.relative(path) if Path(path).is_absolute() else str(path)
        if not self._own_path(rel).is_file():
            raise InputError(f"embedding file {rel} not found in project {self.root}")
        with self._lock:
            defect.embedding = rel

    def set_box_size(self, kind: str, box_size: tuple[float, float, float, float] | None) -> None:
        defect = self.project.defect_kind(kind)
        if box_size is not None:
            w_lo, w_hi, h_lo, h_hi = (float(v) for v in box_size)
            if not (0 < w_lo <= w_hi <= 1 and 0 < h_lo <= h_hi <= 1):
                raise InputError(f"box size {box_size}: give (w_lo, w_hi, h_lo, h_hi) fractions, 0 < lo <= hi <= 1")
            box_size = (w_lo, w_hi, h_lo, h_hi)
        with self._lock:
            defect.box_size = box_size

    # ------------------------------------------------------------------ good images and boxes

    def link_dataset(self, folder: str | os.PathLike, add_images: bool = True) -> list[GoodImage]:
        """Reference a dataset folder in place (nothing is copied).

        With ``add_images`` its good images become the project's: ``train/good`` of an
        MVTec AD category, otherwise the images directly inside ``folder``.
        """
        folder = Path(os.path.abspath(folder))
        entry = self._linked_entry(folder)
        with self._lock:
            if entry not in self.project.linked_datasets:
                self.project.linked_datasets.append(entry)
        if not add_images:
            return []
        source = folder / "train" / "good" if (folder / "train" / "good").is_dir() else folder
        return self.add_good_images(list_images(source))

    def _linked_entry(self, folder: Path) -> str:
        """The ``linked_datasets`` string for ``folder``: relative when it lies inside the
        project (so the project moves with it), absolute otherwise; refuses unusable folders."""
        if not folder.is_dir():
            raise InputError(f"{folder}: dataset folder not found")
        real, real_root = Path(os.path.realpath(folder)), Path(os.path.realpath(self.root))
        entry = real.relative_to(real_root).as_posix() if real.is_relative_to(real_root) else str(folder)
        problem = self._linked_problem(entry)
        if problem is not None:
            raise InputError(f"cannot link {folder}: {problem}")
        return entry

    def relink_dataset(self, old: str, new: str | os.PathLike) -> int:
        """Point a linked dataset at its new location; returns how many paths were rewritten.

        For the GUI after :meth:`missing_linked_datasets` found a dataset that moved; the
        new location is stored relative when it lies inside the project.
        """
        new_folder = self._linked_entry(Path(os.path.abspath(new)))
        if old not in self.project.linked_datasets:
            raise InputError(f"{old} is not a linked dataset of project {self.project.name!r}")
        count = 0

        def moved(path: str) -> str:
            nonlocal count
            if path == old or path.startswith(old.rstrip("/") + "/"):
                count += 1
                return new_folder + path[len(old.rstrip("/")):]
            return path

        with self._lock:
            self.project.linked_datasets = [new_folder if f == old else f for f in self.project.linked_datasets]
            for good in self.project.good_images:
                good.image = moved(good.image)
            for kind in self.project.defect_kinds:
                for support in kind.support:
                    support.image = moved(support.image)
                    support.mask = moved(support.mask) if support.mask else None
        return count

    def add_good_images(self, paths: Iterable[str | os.PathLike]) -> list[GoodImage]:
        """Add good images: copied into the project, or referenced when inside a linked dataset.

        Images already in the project are skipped. Every image is read first; the first
        unreadable one raises before anything is added.
        """
        absolute = [Path(os.path.abspath(p)) for p in paths]
        for path in absolute:
            read_image(path)
        linked = self._linked_roots()
        added = []
        with self._lock:
            present = {g.image for g in self.project.good_images}
            for path in absolute:
                real = Path(os.path.realpath(path))
                in_place = path.is_relative_to(self.root) or any(real.is_relative_to(r) for r in linked)
                rel = self.relative(path) if in_place else self.import_image(path, GOOD_IMAGES_DIR)
                if rel in present:
                    continue
                good = GoodImage(image=rel)
                self.project.good_images.append(good)
                present.add(rel)
                added.append(good)
        return added

    def remove_good_image(self, image_rel: str) -> None:
        with self._lock:
            self.project.good_images.remove(self.project.good_image(image_rel))

    def set_boxes(self, image_rel: str, boxes: Sequence[Box]) -> None:
        """Replace the boxes of a good image; every box must lie inside the image."""
        good = self.project.good_image(image_rel)
        width, height = image_size(self.resolve(image_rel))
        kinds = {k.name for k in self.project.defect_kinds}
        for box in boxes:
            if not isinstance(box, Box):
                raise InputError(f"expected a Box, got {box!r}")
            box.check(what=f"image {image_rel}")
            if not box.fits(height, width):
                raise InputError(f"box {box.to_list()} lies outside image {image_rel} of {width}x{height}")
            if box.defect_kind and box.defect_kind not in kinds:
                raise InputError(f"box {box.to_list()}: unknown defect kind {box.defect_kind!r}")
        with self._lock:
            good.boxes = list(boxes)

    # ------------------------------------------------------------------ generated sets, detectors

    def add_generated_set(self, name: str, samples: Sequence[GeneratedSample] = (),
                          folder: str | None = None) -> GeneratedSet:
        """Record a generated set whose files already lie in ``folder`` (default ``generated/<name>``).

        Sample ``image``/``mask`` paths are manifest paths (relative to the project).
        """
        _check_name(name, "generated set")
        folder = folder if folder is not None else f"{GENERATED_DIR}/{_slug(name)}"
        if not self._own_path(folder).is_dir():
            raise InputError(f"generated set folder {folder} not found in project {self.root}")
        for sample in samples:
            if sample.status not in SAMPLE_STATUSES:
                raise InputError(f"sample {sample.image}: status must be one of {', '.join(SAMPLE_STATUSES)}")
            for rel in (sample.image, sample.mask):
                if not self._own_path(rel).is_file():
                    raise InputError(f"generated file {rel} not found in project {self.root}")
        with self._lock:
            if any(g.name == name for g in self.project.generated_sets):
                raise InputError(f"generated set {name!r} already exists")
            generated = GeneratedSet(name=name, folder=folder, samples=list(samples))
            self.project.generated_sets.append(generated)
        return generated

    def import_generated_folder(self, name: str, folder: str | os.PathLike) -> GeneratedSet:
        """Record a generated set written by ``anogen generate`` (``manifest.jsonl``) inside the project."""
        from anogen.data.generated import read_generated_set

        folder = Path(folder).absolute()
        folder_rel = self.relative(folder)
        self.resolve(folder_rel)
        samples = []
        for item in read_generated_set(folder):
            samples.append(GeneratedSample(
                image=self.relative(item.image_path), mask=self.relative(item.mask_path),
                source=item.source, box=Box(*item.box, defect_kind=item.defect_kind),
                defect_kind=item.defect_kind, seed=item.seed, status=item.status, model=item.model,
                embedding_hash=item.embedding_hash, steps=item.steps, guidance=float(item.guidance)))
        return self.add_generated_set(name, samples, folder=folder_rel)

    def set_sample_status(self, set_name: str, index: int, status: str) -> None:
        """Accept or reject one generated sample (``pending``, ``accepted`` or ``rejected``).

        When the set folder has its own ``manifest.jsonl`` (written by ``anogen generate``),
        the status is written there too, atomically, because the detector trainer reads
        the set folder, not the project.
        """
        if status not in SAMPLE_STATUSES:
            raise InputError(f"sample status must be one of {', '.join(SAMPLE_STATUSES)}, got {status!r}")
        generated = self.project.generated_set(set_name)
        if not 0 <= index < len(generated.samples):
            raise InputError(f"generated set {set_name!r} has no sample #{index}")
        self.writable_path(generated.folder)  # refuse before changing anything
        with self._lock:
            generated.samples[index].status = status
            self._sync_set_manifest(generated)

    def _sync_set_manifest(self, generated: GeneratedSet) -> None:
        from anogen.data.generated import MANIFEST_NAME as SET_MANIFEST
        from anogen.data.generated import read_generated_set, write_manifest

        folder = self.writable_path(generated.folder)
        if not (folder / SET_MANIFEST).is_file():
            return
        status_by_image = {os.path.realpath(self.resolve(s.image)): s.status for s in generated.samples}
        samples = read_generated_set(folder)
        changed = False
        for sample in samples:
            wanted = status_by_image.get(os.path.realpath(sample.image_path))
            if wanted is not None and wanted != sample.status:
                sample.status, changed = wanted, True
        if changed:
            write_manifest(folder, samples)

    def add_detector(self, name: str, folder: str, detector: str,
                     metrics: Mapping[str, float] | None = None) -> DetectorEntry:
        """Record a trained detector saved in ``folder`` (inside the project) with its metrics.

        A detector of the same name is replaced (retraining under one name is common).
        """
        _check_name(name, "detector")
        if not self._own_path(folder).is_dir():
            raise InputError(f"detector folder {folder} not found in project {self.root}")
        entry = DetectorEntry(name=name, folder=folder, detector=detector,
                              metrics={k: float(v) for k, v in (metrics or {}).items()})
        with self._lock:
            self.project.detectors = [d for d in self.project.detectors if d.name != name] + [entry]
        return entry

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r}, name={self.project.name!r})"
