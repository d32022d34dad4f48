"""The one exception type users see."""


class MinidmlError(Exception):
    """A problem with the user's input or environment.

    The message is one line that names the offending file or option and says how to fix it.
    The command-line interface prints it without a traceback and exits non-zero.
    """
