"""The errors a user can fix (a config value, a checkpoint): one line each, no traceback, exit code 2."""


class ConfigError(ValueError):
    """A config value that is well-typed but not allowed."""
