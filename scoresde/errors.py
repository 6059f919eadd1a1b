"""Exceptions raised by scoresde.

Every error a user can cause is a subclass of :class:`ScoreSDEError`, so callers (and the
command line) can tell user errors from bugs. The subclasses also derive from the matching
built-in exception (``ValueError``, ``RuntimeError``) so ordinary ``except ValueError`` works.
"""

from __future__ import annotations


class ScoreSDEError(Exception):
    """Base class of all errors raised deliberately by scoresde."""


class ShapeError(ScoreSDEError, ValueError):
    """A tensor has the wrong shape (data, time, or a score function's output)."""


class TimeRangeError(ScoreSDEError, ValueError):
    """A time outside ``[0, T]`` was given."""


class UnknownSolverError(ScoreSDEError, KeyError):
    """A solver name that is not in :data:`scoresde.SOLVERS`."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class IncompatibleSDEError(ScoreSDEError, TypeError):
    """A solver was asked to serve an SDE it cannot serve (e.g. one without a closed-form kernel)."""


class NonFiniteError(ScoreSDEError, FloatingPointError):
    """NaN or infinity appeared during sampling or integration."""


class IntegrationError(ScoreSDEError, RuntimeError):
    """An ODE integration failed (step size underflow, too many steps)."""


class DataError(ScoreSDEError, ValueError):
    """Missing, corrupt or malformed data."""


class CheckpointError(ScoreSDEError, ValueError):
    """Missing, corrupt or incompatible checkpoint."""


class LabelError(ScoreSDEError, ValueError):
    """A class label outside ``[0, K)``, a label for a model without classes, or labels of the wrong shape."""


class MaskError(ScoreSDEError, ValueError):
    """An inpainting mask of the wrong shape or with values other than 0 and 1."""


class OptionError(ScoreSDEError, ValueError, TypeError):
    """An argument or option has an invalid value or type (a non-integer step count, an unknown grid,
    a generator that is not a ``torch.Generator``, a solver option the solver does not take).

    It is both a ``ValueError`` and a ``TypeError``, so either ``except`` clause catches it.
    """


class ResourceLimitError(ScoreSDEError, MemoryError):
    """A request would need far more memory than allowed (a huge network, a file whose header claims a huge array).

    Raised before anything is allocated; the message says how much was asked for and what the limit is.
    """


class RunLockedError(ScoreSDEError, RuntimeError):
    """Another live process holds the run directory (its pid and host are in the message)."""


class OutputError(ScoreSDEError, OSError):
    """An output file or directory cannot be written (disk full, read-only, a file where a directory belongs)."""


class DistributedError(ScoreSDEError, RuntimeError):
    """A multi-process run failed: a process did not answer within the collective timeout, or the group broke."""


class NotFittedError(ScoreSDEError, RuntimeError):
    """An object that must be fitted first (a GITS grid) was used before :meth:`fit`."""


class ShardError(DistributedError):
    """A sharded job failed: a rank died or stalled, or a folder holds chunks of another job."""


class ConfigError(ScoreSDEError, ValueError):
    """A training configuration with an invalid field (the message names the field and what it needs)."""


class UserError(ScoreSDEError, ValueError):
    """A command-line input that does not fit (an option combination, a file of the wrong kind).

    The command line prints it as one line, ``scoresde: error: ...``, and exits with status 1.
    """
