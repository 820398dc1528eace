"""What DRAEM's and DeSTSeg's configs share: presets, overrides and the JSON round trip.

A detector config is a plain dataclass that also inherits :class:`DetectorConfig`; its
class variables name the detector (``kind``, ``display_name``) and its ``presets``
(field overrides on top of the dataclass defaults, which are the paper's values).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from anogen.errors import InputError

ConfigT = TypeVar("ConfigT", bound="DetectorConfig")


class DetectorConfig:
    kind: ClassVar[str]
    display_name: ClassVar[str]
    presets: ClassVar[dict[str, dict[str, Any]]]
    # Every subclass is a dataclass with at least these fields; declared here for type checkers
    # (annotations on this plain base class add no dataclass fields).
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    image_size: int
    batch_size: int
    steps: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
        """The inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        return cls(**_checked_fields(cls, data))

    def with_overrides(self: ConfigT, overrides: dict[str, Any] | None) -> ConfigT:
        """A copy with some fields replaced (validated like a fresh config)."""
        if not overrides:
            return dataclasses.replace(self)
        return dataclasses.replace(self, **_checked_fields(type(self), overrides))

    def total_steps(self, num_train_images: int) -> int:
        """Optimiser steps of a full run; by default the config's ``steps`` field (DRAEM
        counts epochs over the ``num_train_images`` instead)."""
        if self.steps is None:
            raise NotImplementedError(f"{type(self).__name__} has no steps: it must override total_steps")
        return int(self.steps)

    @classmethod
    def preset(cls: type[ConfigT], name: str) -> ConfigT:
        if name not in cls.presets:
            raise InputError(f"unknown {cls.display_name} preset '{name}'; choose one of {', '.join(cls.presets)}")
        return cls(**cls.presets[name])


# Upper bounds on sizes, so a typo fails with a message instead of asking for more memory
# than any machine has (image_size=100000 made OpenCV allocate 120 GB). A 2048 px batch of
# 8 already needs tens of GB of activations; the paper's presets use 256 px.
MAX_SIZES = {"image_size": 2048, "batch_size": 1024}


def require_int(config: DetectorConfig, name: str, minimum: int = 1) -> None:
    """Check an integer field (a whole float from JSON or ``--set`` is accepted)."""
    value = getattr(config, name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
        setattr(config, name, value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{config.kind} {name} must be an integer >= {minimum}, got {value!r}")
    maximum = MAX_SIZES.get(name)
    if maximum is not None and value > maximum:
        raise InputError(f"{config.kind} {name} must be at most {maximum} (larger does not fit in memory), "
                         f"got {value}")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _checked_fields(cls: type[DetectorConfig], data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown {cls.kind} option(s) {', '.join(unknown)}; "
                         f"known options: {', '.join(sorted(names))}")
    return dict(data)
