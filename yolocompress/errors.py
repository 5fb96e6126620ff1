"""Exception types that map onto the CLI's exit codes.

Library code raises these; the CLI turns them into one line on stderr and an exit code:
``InputError`` -> 2 (bad usage or bad input), ``CompressionError`` -> 1 (a run failed or regressed).
"""
from __future__ import annotations


# Every character ``str.splitlines`` breaks at, shown escaped so that a message stays one line even when it
# quotes a user's value (a path or a YAML string) that holds a line break.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class YoloCompressError(Exception):
    """Base class of every error the CLI reports as one line (line breaks in the message are escaped)."""

    exit_code = 1

    def __str__(self) -> str:
        return super().__str__().translate(_LINE_BREAKS)


class InputError(YoloCompressError):
    """The user's input is wrong: missing or corrupt file, bad YAML, impossible option value."""

    exit_code = 2


class EmptySplitError(InputError):
    """A data set split has no image files at all: bad input to a command that uses the split, a failed
    check for ``data check`` (exit 1 there)."""


class UnsafeCheckpointError(InputError):
    """A checkpoint needs a class or function outside the loading allowlist; it was not unpickled."""


class CompressionError(YoloCompressError):
    """A run failed or a check found a regression."""

    exit_code = 1


class TrainingDivergedError(CompressionError):
    """Training met a non-finite loss, gradient or weight; the checkpoint of the last good epoch was kept."""
