"""Imports every command module so each registers itself on the app (in workflow order)."""

from chipq.cli import (
    compress_cmd,  # noqa: F401
    demo_cmd,  # noqa: F401
    eval_cmd,  # noqa: F401
    extract_cmd,  # noqa: F401
    fetch_cmd,  # noqa: F401
    inspect_cmd,  # noqa: F401
    verify_cmd,  # noqa: F401
)
