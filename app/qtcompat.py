"""Workarounds for bugs of the Qt binding in use. Imported by ``app/__init__.py``.

PySide6 6.12.0 on CPython 3.11: every ``SignalInstance.emit()`` returns ``True`` without
taking a reference to it, so each emit drops one reference to ``True``. After a few
hundred emits (a mouse stroke, a training run) ``True`` is deallocated and the
interpreter aborts with "bool_dealloc: deallocating True or False". Python 3.12 made
``True``/``False`` immortal; on older versions we give them the same protection by adding
a very large number to their reference counts. Extra references to these singletons are
harmless: they are never freed anyway.
"""

from __future__ import annotations

import ctypes
import sys

_PROTECTION = 1 << 40
_done = False


def protect_bool_singletons() -> None:
    """Make ``True`` and ``False`` effectively immortal on CPython < 3.12 (idempotent)."""
    global _done  # once per process
    if _done or sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        _done = True
        return
    for singleton in (True, False):
        refcount = ctypes.c_ssize_t.from_address(id(singleton))  # ob_refcnt is the first field
        refcount.value += _PROTECTION
    _done = True
