"""The project's error tree.

Every expected failure is a `DerainError`; the CLI prints it as one line and
exits non-zero. Each subclass also derives from the matching builtin so callers
that catch `ValueError` or `OSError` keep working.
"""
from __future__ import annotations


class DerainError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigError(DerainError, ValueError):
    """A config file, key or value is wrong; the message names the file and key."""


class InputError(DerainError, OSError):
    """An input file, folder or URL cannot be read as what it claims to be."""


class OutputError(DerainError, OSError):
    """An output cannot be written (exists without --overwrite, unwritable, ...)."""


class WeightsError(DerainError, OSError):
    """A weights file is missing, corrupt or made for another network."""


class SourceConnectionError(InputError):
    """A live source could not be opened after the configured number of tries."""


class WorkerError(DerainError, RuntimeError):
    """A worker broke its contract (wrong batch length) or could not be replaced."""


class PluginError(DerainError, RuntimeError):
    """A plugin cannot be loaded or configured; the message names it."""
