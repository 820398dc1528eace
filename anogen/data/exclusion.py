"""Which images of a dataset to leave out, recognised by their content.

Two kinds of test image must stay out of an evaluation: the *support* images (the few
real defects stage 1 learned from) and the share of the test set a training run used to
pick its checkpoint. Both are identified by the SHA-256 digest of the file's bytes,
never by path: a copy of the dataset in another folder, or a support image copied into
a project folder, is still the same image, and two different datasets whose files
happen to share relative names are not.

A training run records the digests (see :mod:`anogen.detection.train`), so evaluation
does not need the original files to exist any more.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from anogen.errors import InputError

_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file's bytes (an :class:`InputError` names a missing file)."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def file_digests(paths: Iterable[str | os.PathLike]) -> list[str]:
    """:func:`file_digest` of each path, in order."""
    return [file_digest(p) for p in paths]


def excluded_indices(records: Sequence[Any], exclude: Sequence[str | os.PathLike] = (), *,
                     digests: Iterable[str] = ()) -> set[int]:
    """Indices of ``records`` (objects with ``.path``) whose content is one of the excluded images.

    ``exclude`` are image files (each must exist: a mistyped support path would otherwise
    silently leave the image in the test set); ``digests`` are digests recorded earlier.
    """
    wanted = set(digests) | set(file_digests(exclude))
    if not wanted:
        return set()
    return {index for index, record in enumerate(records) if file_digest(record.path) in wanted}

