"""The one error family of colourbatch, its exit codes, and the one-line reason.

Library code raises a subclass of `ColourbatchError`; the class carries the
exit code the command line ends with, and the message is the one line the user
reads. Only `cli.main()` catches these, prints ``error: <message>`` and exits.

Exit codes (the same for every command):

* 0: everything asked for was done;
* 1: the run went ahead but some inputs failed (listed), or it failed part-way;
* 2: the run could not start (nothing was done);
* 130: interrupted (Ctrl-C); finished outputs are kept.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_START = 2
EXIT_INTERRUPTED = 130

#: Longest reason shown on one line; longer text is cut.
REASON_CHARS = 200


class ColourbatchError(Exception):
    """Base of every error a user sees: one line, and the exit code it ends the run with."""

    exit_code = EXIT_START

    def __init__(self, message: str = ""):
        super().__init__(one_line(message) if message else type(self).__name__)


class UsageError(ColourbatchError):
    """The command asks for something contradictory (e.g. --end with --duration)."""


class InputError(ColourbatchError):
    """One input (a page, a film, a file) that cannot be used; a batch goes on past it."""

    exit_code = EXIT_FAILED


class WriteError(ColourbatchError):
    """An output that could not be written (disk full, permissions): work had started."""

    exit_code = EXIT_FAILED


def one_line(reason: BaseException | str) -> str:
    """The first non-empty line of an exception's text (or its type name), at most REASON_CHARS."""
    text = reason if isinstance(reason, str) else str(reason)
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            return line[:REASON_CHARS]
    return reason if isinstance(reason, str) else type(reason).__name__
