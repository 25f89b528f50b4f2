"""The one exception tree of the package, and its warning class."""

from __future__ import annotations

__all__ = [
    "CoverageError",
    "InputError",
    "CRSError",
    "DataSourceError",
    "OutputBusyError",
    "InfeasibleError",
    "CoverageWarning",
]


class CoverageError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(CoverageError, ValueError):
    """Input data or parameters cannot be used."""


class CRSError(InputError):
    """A CRS is missing, inconsistent or unsuitable."""


class DataSourceError(CoverageError, OSError):
    """A file could not be found, read or parsed."""


class OutputBusyError(DataSourceError):
    """Another covplan run is writing the same output folder (it holds the folder's lock)."""


class InfeasibleError(CoverageError):
    """No result meets the constraints; the message names the binding one."""


class CoverageWarning(UserWarning):
    """A result was produced, but part of the input was adjusted; the message says how."""
