"""Imports every command module so each registers itself on the app (in workflow order)."""
# ruff: noqa: I001  (the import order is the order `chipq --help` lists the commands)

from chipq.cli import fetch_cmd  # noqa: F401
from chipq.cli import compress_cmd  # noqa: F401
from chipq.cli import plan_cmd  # noqa: F401
from chipq.cli import inspect_cmd  # noqa: F401
from chipq.cli import verify_cmd  # noqa: F401
from chipq.cli import export_cmd  # noqa: F401
from chipq.cli import extract_cmd  # noqa: F401
from chipq.cli import eval_cmd  # noqa: F401
from chipq.cli import demo_cmd  # noqa: F401
from chipq.cli import index_cmd  # noqa: F401
from chipq.cli import search_cmd  # noqa: F401
