"""The range of a numeric config field: what the app's spin box offers, and what
``validate()`` checks where the two agree.

Each config module (:mod:`anogen.diffusion.config`, :mod:`anogen.detection.train_config`)
declares a ``*_RANGES`` dict beside its dataclass, keyed by field name. The app builds its
spin boxes from them; ``validate()`` uses the same bound where a value beyond it is wrong
rather than just unusual (``steps >= 1``, ``mix`` in [0, 1]). The upper bounds are what the
app offers; the CLI and the library accept more where nothing breaks (a 200 000-step run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

NumberT = TypeVar("NumberT", int, float)


@dataclass(frozen=True)
class FieldRange(Generic[NumberT]):
    """``minimum <= value <= maximum``, both inclusive."""

    minimum: NumberT
    maximum: NumberT

    def __contains__(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.minimum <= value <= self.maximum


#: Seeds the app offers (a signed 32-bit int, which every library seeds from).
SEED_RANGE = FieldRange(0, 2**31 - 1)
