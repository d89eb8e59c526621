"""The error type for bad input, shared by every layer that reads user input."""


class ConfigError(ValueError):
    """Bad input: the message is one line naming the option and what is allowed.

    The command line turns it into that one line on stderr and exit code 2.
    """
