"""The one error type for bad input found while resolving a run's configuration."""


class ConfigError(ValueError):
    """Bad input: the message is one line naming the option and what is allowed."""
