"""Errors a user can act on.

Anything raised as an :class:`AnoGenError` is a problem with the user's input or
environment (a missing model, a corrupt image, a box off the image). The CLI prints
its message on one line and exits 2; the GUI shows it in a dialog. Anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


class AnoGenError(Exception):
    """Base class of every error a user can fix."""


class InputError(AnoGenError):
    """Bad input data: unreadable file, wrong size, empty mask, invalid config."""


class ProblemListError(InputError):
    """An input with several problems, all named at once; ``problems`` lists them."""

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(f"{where}: {count} problem{'s' if count != 1 else ''}: " + "; ".join(self.problems))


class ProjectFileError(ProblemListError):
    """A project manifest (``project.json``) that does not decode."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        super().__init__(source, problems)


class WorkspaceError(ProblemListError):
    """A project folder that cannot be opened."""

    def __init__(self, root: os.PathLike[str] | str, problems: Sequence[str]) -> None:
        self.root = root
        super().__init__(f"project {root}", problems)


class ModelError(AnoGenError):
    """A model is missing, broken, or of the wrong family or width."""


class JobCancelled(AnoGenError):
    """A job stopped because its cancel event was set. No partial output remains."""


class TrainingDiverged(AnoGenError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
