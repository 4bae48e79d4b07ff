"""Errors the toolkit raises for bad input.

Every user-facing problem is an :class:`UnlearnError` (a ``ValueError``), so
callers can catch one type and the command line can turn it into a one-line
message with exit code 2.
"""

from __future__ import annotations


class UnlearnError(ValueError):
    """Bad input: a request, data set, checkpoint, scenario or option that cannot be served."""


class InvalidRequestError(UnlearnError):
    """A forget request that does not fit the data (index out of range, unknown class, ...)."""


class UnsupportedRequestError(UnlearnError):
    """A method was asked to serve a request kind it does not support."""


class CheckpointMismatchError(UnlearnError):
    """A checkpoint was written for another architecture or has other tensor shapes."""


class ScenarioError(UnlearnError):
    """A scenario file is malformed or names something that does not exist."""


class LedgerError(UnlearnError):
    """A deletion ledger that cannot be opened, is inconsistent, or refuses an operation."""


class MissingDependencyError(UnlearnError):
    """An optional dependency needed for this feature is not installed."""


def require(module: str, extra: str | None = None):
    """Import an optional dependency or raise a clear :class:`MissingDependencyError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        hint = f" (pip install 'unlearn-toolkit[{extra}]')" if extra else ""
        raise MissingDependencyError(
            f"optional dependency '{module}' is not installed{hint}"
        ) from exc
