"""Named presets of the stage-1 and stage-2 configs.

A preset is a set of field values (``LEARN_PRESETS`` and ``GENERATE_PRESETS`` in
:mod:`anogen.diffusion.config`). Applying one changes only the fields still at their
dataclass default, so an option the user set explicitly (to a non-default value) wins
over the preset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from anogen.errors import InputError

ConfigT = TypeVar("ConfigT")


def apply_preset(config: ConfigT, presets: Mapping[str, Mapping[str, Any]], name: str) -> ConfigT:
    """A copy of the dataclass ``config`` with preset ``name`` applied to its default fields."""
    if name not in presets:
        raise InputError(f"unknown preset '{name}'; choose one of {', '.join(presets)}")
    defaults = {f.name: f.default for f in dataclasses.fields(config)  # type: ignore[arg-type]
                if f.default is not dataclasses.MISSING}
    unknown = sorted(set(presets[name]) - set(defaults))
    if unknown:
        raise InputError(f"preset '{name}' sets unknown options: {', '.join(unknown)}")
    changes = {key: value for key, value in presets[name].items() if getattr(config, key) == defaults[key]}
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
