"""The exception type for errors a user can cause (bad flags, files, checkpoints).

The CLI prints these as a single line without a traceback; everything else is a bug.
"""


class SpadeganError(Exception):
    """A user-facing error whose message names the file/option/value and the fix."""


class UnsafeFileError(SpadeganError):
    """A file refused because reading it could run code (e.g. an opt.pkl pickling a function)."""
