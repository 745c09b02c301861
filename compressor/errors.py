"""The exception root every chipq failure derives from.

The CLI turns a `ChipqError` into one line on stderr and exits with its `exit_code`; anything else is
a bug and shows a traceback only under `--debug`.
"""

from __future__ import annotations

# The root lives in the format package, which imports nothing from the rest of chipq.
from chipq.formats.errors import ChipqError

__all__ = ["ChipqError", "CheckFailed", "UsageError"]


class CheckFailed(ChipqError):
    """A verification found the blob or a result wrong (the input itself was readable)."""

    exit_code = 1


class UsageError(ChipqError):
    """A command-line value that cannot be used (a plan, a size, a missing folder)."""
