"""File names from user input: keep what the user typed, change only what is unsafe.

An engineer who imports ``défaut 1 ø.png`` expects to find ``défaut 1 ø.png`` in the
project, not ``d_faut_1.png``. Letters of every script, spaces and punctuation stay.
Only what would break a path or a file system is replaced by ``_``:

- path separators (``/`` and ``\\``) and the characters Windows forbids (``<>:"|?*``);
- control characters (including NUL and newlines);
- a leading ``.`` (a hidden file, and ``.``/``..`` are not names at all);
- trailing dots and spaces (Windows drops them, so two names would collide);
- the names Windows reserves for devices (``CON``, ``NUL``, ``COM1`` ...), which get
  a ``_`` appended.

Names are normalised to Unicode NFC, so the same visible name typed on macOS (which
decomposes accents) and on Linux is one file, and cut to a length every common file
system accepts.
"""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
# 255 bytes is the usual limit of one path component; leave room for a suffix such as
# "_12_mask.png" added to the stem later.
MAX_STEM_BYTES = 200


def safe_stem(stem: str, default: str = "image") -> str:
    """A file name stem that is safe on Linux, macOS and Windows and keeps the user's text."""
    text = unicodedata.normalize("NFC", stem)
    text = _UNSAFE.sub("_", text).strip(" ")
    text = text.rstrip(". ")
    if text.startswith("."):
        text = "_" + text[1:]
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_STEM_BYTES:  # cut on a character boundary, never inside one
        text = encoded[:MAX_STEM_BYTES].decode("utf-8", errors="ignore").rstrip(". ")
    if not text:
        return default
    first, dot, rest = text.partition(".")
    if first.rstrip(" ").upper() in _WINDOWS_RESERVED:  # Windows reserves "CON" and "con.tar" alike
        text = f"{first}_{dot}{rest}"
    return text
