"""Undo/redo for mask edits with bounded memory.

Each edit (a brush stroke, a fill, a clear) is stored as the before/after pixels of its
bounding box only, bit-packed, so a stroke on a 4000x3000 mask costs a few kilobytes.
When the stored patches exceed ``max_bytes`` the oldest edits are forgotten.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 with x1/y1 exclusive

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class MaskPatch:
    """The pixels of one edit's bounding box before and after the edit."""

    rect: Rect
    before: np.ndarray  # np.packbits of the bool patch
    after: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.rect
        return (y1 - y0, x1 - x0)

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        h, w = self.shape
        return np.unpackbits(packed, count=h * w).reshape(h, w).astype(bool)


class MaskHistory:
    """A bounded undo/redo stack of :class:`MaskPatch` edits."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._undo: deque[MaskPatch] = deque()
        self._redo: list[MaskPatch] = []
        self._bytes = 0

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def nbytes(self) -> int:
        """Bytes held by the undo and redo patches together."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._undo)

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self._bytes = 0

    def record(self, rect: Rect, before: np.ndarray, after: np.ndarray) -> bool:
        """Store an edit of ``rect``; ``before``/``after`` are its bool patches.

        Returns False (and stores nothing) when the edit changed no pixel.
        """
        if before.shape != after.shape or np.array_equal(before, after):
            return False
        patch = MaskPatch(rect, np.packbits(before.astype(bool)), np.packbits(after.astype(bool)))
        for dropped in self._redo:
            self._bytes -= dropped.nbytes
        self._redo.clear()
        self._undo.append(patch)
        self._bytes += patch.nbytes
        while self._bytes > self.max_bytes and len(self._undo) > 1:
            self._bytes -= self._undo.popleft().nbytes
        return True

    def undo(self, mask: np.ndarray) -> Rect | None:
        """Revert the newest edit in ``mask`` (in place); returns the changed rect."""
        if not self._undo:
            return None
        patch = self._undo.pop()
        x0, y0, x1, y1 = patch.rect
        mask[y0:y1, x0:x1] = patch.unpack(patch.before)
        self._redo.append(patch)
        return patch.rect

    def redo(self, mask: np.ndarray) -> Rect | None:
        """Re-apply the newest undone edit in ``mask`` (in place); returns the changed rect."""
        if not self._redo:
            return None
        patch = self._redo.pop()
        x0, y0, x1, y1 = patch.rect
        mask[y0:y1, x0:x1] = patch.unpack(patch.after)
        self._undo.append(patch)
        return patch.rect
