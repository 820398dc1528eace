"""Undo/redo for the canvas's edits (mask strokes and boxes) with bounded memory.

One ordered stack holds both kinds, so undo reverts the newest edit whatever it was.
A mask edit (a brush stroke, a fill, a clear) is stored as the before/after pixels of
its bounding box only, bit-packed, so a stroke on a 4000x3000 mask costs a few
kilobytes. A box edit (draw, move, resize, delete, a proposal) stores the box list
before and after: a few integers. When the stored edits exceed ``max_bytes`` the
oldest are forgotten.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 with x1/y1 exclusive
Boxes = tuple[tuple[tuple[int, int, int, int], str], ...]  # (box, label) pairs

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


@dataclass(frozen=True)
class BoxEdit:
    """The image's boxes before and after one edit."""

    before: Boxes
    after: Boxes

    @property
    def nbytes(self) -> int:
        return 16 * (len(self.before) + len(self.after)) + 64


Edit = MaskPatch | BoxEdit


class MaskHistory:
    """A bounded undo/redo stack of :class:`MaskPatch` and :class:`BoxEdit` edits."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._undo: deque[Edit] = deque()
        self._redo: list[Edit] = []
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
        self._push(MaskPatch(rect, np.packbits(before.astype(bool)), np.packbits(after.astype(bool))))
        return True

    def record_boxes(self, before: Boxes, after: Boxes) -> bool:
        """Store a box edit; False (nothing stored) when the boxes did not change."""
        if tuple(before) == tuple(after):
            return False
        self._push(BoxEdit(tuple(before), tuple(after)))
        return True

    def _push(self, edit: Edit) -> None:
        for dropped in self._redo:
            self._bytes -= dropped.nbytes
        self._redo.clear()
        self._undo.append(edit)
        self._bytes += edit.nbytes
        while self._bytes > self.max_bytes and len(self._undo) > 1:
            self._bytes -= self._undo.popleft().nbytes

    def undo(self, mask: np.ndarray | None) -> Rect | BoxEdit | None:
        """Revert the newest edit. A mask edit is reverted in ``mask`` (in place) and
        its rect returned; a box edit is returned for the caller to show ``before``."""
        return self._move(self._undo, self._redo, mask, reverting=True)

    def redo(self, mask: np.ndarray | None) -> Rect | BoxEdit | None:
        """Re-apply the newest undone edit (as :meth:`undo`; a box edit's ``after``)."""
        return self._move(self._redo, self._undo, mask, reverting=False)

    @staticmethod
    def _move(source: deque[Edit] | list[Edit], target: deque[Edit] | list[Edit], mask: np.ndarray | None,
              reverting: bool) -> Rect | BoxEdit | None:
        """Take the newest edit of ``source`` onto ``target``, applying a mask edit to ``mask``."""
        if not source:
            return None
        edit = source[-1]
        if isinstance(edit, BoxEdit):
            target.append(source.pop())
            return edit
        if mask is None:
            return None
        x0, y0, x1, y1 = edit.rect
        mask[y0:y1, x0:x1] = edit.unpack(edit.before if reverting else edit.after)
        target.append(source.pop())
        return edit.rect
