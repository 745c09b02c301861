"""Imports every command module so each registers itself on the app."""

from . import inspect_cmd  # noqa: F401
