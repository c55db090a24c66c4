"""The errors a user can cause, and the exit codes they map to.

`UserError` is bad input (a file, key, id or state at fault): the CLI prints its one-line
message and exits 2, never a traceback. ConfigError (config.py) is treated the same way.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UserError(Exception):
    """One line naming the file, key or id at fault; exit status 2."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none): for one-line reports."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
