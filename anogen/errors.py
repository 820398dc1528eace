"""Errors a user can act on.

Anything raised as an :class:`AnoGenError` is a problem with the user's input or
environment (a missing model, a corrupt image, a box off the image). The CLI prints
its message on one line and exits 2; the GUI shows it in a dialog. Anything else is
a bug and keeps its traceback.
"""


class AnoGenError(Exception):
    """Base class of every error a user can fix."""


class InputError(AnoGenError):
    """Bad input data: unreadable file, wrong size, empty mask, invalid config."""


class ModelError(AnoGenError):
    """A model is missing, broken, or of the wrong family or width."""


class JobCancelled(AnoGenError):
    """A job stopped because its cancel event was set. No partial output remains."""


class TrainingDiverged(AnoGenError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
