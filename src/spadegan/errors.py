"""Errors and warnings a user can cause, and how a command reports them.

`SpadeganError` is the exception type for problems a user can fix (bad flags, files,
checkpoints); its message names the file/option/value and the fix. A command prints it as
one line without a traceback (`run_command`); everything else is a bug. `SpadeganWarning`
is for things a user should know but that do not stop the work (e.g. a fallback to the CPU);
commands print it as one line too.
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator


class SpadeganError(Exception):
    """A user-facing error whose message names the file/option/value and the fix."""


class UnsafeFileError(SpadeganError):
    """A file refused because reading it could run code (e.g. an opt.pkl pickling a function)."""


class SpadeganWarning(UserWarning):
    """A user-facing warning (a fallback, a slower setting): printed as one line by commands."""


@contextmanager
def _one_line_warnings(name: str) -> Iterator[None]:
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SpadeganWarning):
            print(f"spadegan {name}: warning: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def run_command(name: str, command: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run `spadegan <name>`: its exit code; a SpadeganError is one line on stderr and exit
    code 2, Ctrl-C exit code 130; SpadeganWarnings are printed as one line each."""
    with _one_line_warnings(name):
        try:
            return int(command(argv) or 0)
        except SpadeganError as e:
            print(f"spadegan {name}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"spadegan {name}: interrupted", file=sys.stderr)
            return 130
