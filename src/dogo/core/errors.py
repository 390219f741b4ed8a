"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Raise :class:`DogoError` for anything the *user* can fix (a bad config value, a missing
dataset, a damaged file); its message must name the file, key or value and say what would fix
it. Programming errors stay ordinary exceptions so that they keep their tracebacks.
"""


class DogoError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class ConfigError(DogoError):
    """A config key or value that is unknown, of the wrong type or out of range."""


class DataError(DogoError):
    """A dataset that is missing, damaged or of the wrong format."""


class CheckpointError(DogoError):
    """A checkpoint that is missing, damaged or from another run."""
