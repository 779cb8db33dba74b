"""One family of errors: everything jaxnn raises on purpose is a `jaxnn.Error`, and each message
names what was expected and what came. The subclasses also derive from the matching built-in
(ValueError, TypeError, RuntimeError), so `except ValueError` keeps working.

    try:
        train.fit(...)
    # a user's mistake or a fault jaxnn detected: report, don't crash
    except jaxnn.Error as e:
        sys.exit(f"error: {e}")
"""

__all__ = [
    "Error",
    "InputError",
    "InputTypeError",
    "DataError",
    "DownloadError",
    "CheckpointError",
    "TrainingDiverged",
]


class Error(Exception):
    """Base of every error jaxnn raises on purpose."""


class InputError(Error, ValueError):
    """A bad argument, shape or value was given (the message says what was expected)."""


class InputTypeError(Error, TypeError):
    """An argument of the wrong type was given."""


class DataError(InputError):
    """A dataset is missing, truncated, corrupt, unknown or invalid (NaN, labels out of range, ...)."""


class DownloadError(DataError):
    """No mirror could deliver a file (each mirror's failure is listed)."""


class CheckpointError(Error, ValueError):
    """A checkpoint is unreadable, corrupt, or from another model or version."""


class TrainingDiverged(Error, RuntimeError):
    """The loss or the parameters became NaN or infinite; the last good checkpoint is kept.
    `history` holds the run up to the first non-finite value (for plotting), when `fit` raised it."""

    history: dict | None = None
