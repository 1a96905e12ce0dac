"""User-facing errors: the CLI prints their message and exits non-zero, no traceback."""


class MSTError(Exception):
    """An error caused by the user's input (paths, files, options), with a message saying what to do."""
