"""Imports every command module so each registers itself on the app (in workflow order)."""

from . import fetch_cmd  # noqa: F401
from . import compress_cmd  # noqa: F401
from . import inspect_cmd  # noqa: F401
from . import export_cmd  # noqa: F401
from . import verify_cmd  # noqa: F401
from . import extract_cmd  # noqa: F401
from . import eval_cmd  # noqa: F401
from . import demo_cmd  # noqa: F401
