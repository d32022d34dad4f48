"""The one exception type users see."""


class MinidmlError(Exception):
    """A problem with the user's input or environment.

    The message is one line that names the offending file or option and says how to fix it.
    The command-line interface prints it without a traceback and exits non-zero.
    """


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` fit for a one-line message: its first line that is not blank, its runs of
    white space made one space, cut to ``limit`` characters if given ("" when there is
    none)."""
    first = next((" ".join(line.split()) for line in str(text).splitlines() if line.strip()), "")
    return first if limit is None or len(first) <= limit else first[:limit - 1] + "…"


def describe(error: BaseException, limit: int | None = None) -> str:
    """An exception in one line: its type and :func:`one_line` of its message (a
    :class:`MinidmlError`'s message alone, which is already meant for the user)."""
    message = one_line(error, limit)
    if isinstance(error, MinidmlError) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
