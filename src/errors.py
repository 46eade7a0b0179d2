"""Errors a user can fix: reported as one line (``error: ...``) instead of a traceback."""


class UserError(Exception):
    """Bad input (config, data location, data files): the message says what and how to fix it."""


class DataError(UserError):
    """A dataset is missing, incomplete or corrupt."""


class ConfigError(UserError, ValueError):
    """A config value or choice is wrong (a ValueError too, for code that builds models directly)."""
