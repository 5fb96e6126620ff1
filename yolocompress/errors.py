"""Exception types that map onto the CLI's exit codes.

Library code raises these; the CLI turns them into one line on stderr and an exit code:
``InputError`` -> 2 (bad usage or bad input), ``CompressionError`` -> 1 (a run failed or regressed).
"""
from __future__ import annotations


class YoloCompressError(Exception):
    """Base class of every error the CLI reports as one line."""

    exit_code = 1


class InputError(YoloCompressError):
    """The user's input is wrong: missing or corrupt file, bad YAML, impossible option value."""

    exit_code = 2


class UnsafeCheckpointError(InputError):
    """A checkpoint needs a class or function outside the loading allowlist; it was not unpickled."""


class CompressionError(YoloCompressError):
    """A run failed or a check found a regression."""

    exit_code = 1
