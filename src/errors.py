"""Errors a user can fix: reported as one line (``error: ...``) instead of a traceback."""
from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input (config, data location, data files): the message says what and how to fix it."""


class DataError(UserError):
    """A dataset is missing, incomplete or corrupt."""


class ConfigError(UserError, ValueError):
    """A config value or choice is wrong (a ValueError too, for code that builds models directly)."""


def lightning_misconfiguration(exc: BaseException) -> UserError | None:
    """Lightning's MisconfigurationException (it names an option the user set: a callback that
    needs a logger, a monitored metric that is never logged) as a one-line UserError, else None.
    Looked up in sys.modules, so the command-line guards never import lightning: if it was never
    imported, the error cannot be one of its own."""
    module = sys.modules.get("lightning.fabric.utilities.exceptions")
    if module is None or not isinstance(exc, module.MisconfigurationException):
        return None
    return UserError(f"Lightning refused the configuration: {' '.join(str(exc).split())}")
