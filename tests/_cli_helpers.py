"""Shared pieces of the CLI tests."""

from __future__ import annotations

import pytest


def one_line_error(capsys: pytest.CaptureFixture, *names: str) -> str:
    """The error line of a failed command: last on stderr, no traceback, naming ``names``."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("anogen: error:"), err
    for name in names:
        assert name in line, line
    return line
