"""--help of every command: flags shown as flags, the input size option named the same everywhere."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from chipq.cli import app

COMMANDS = ["fetch-vgg16", "compress", "inspect", "verify", "extract", "eval", "demo"]


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["chipq", *COMMANDS])
def test_boolean_options_are_shown_as_flags(command):
    assert "<bool>" not in help_text(*command)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_reporting_command_has_json(command):
    assert "--json" in help_text(command)


@pytest.mark.parametrize("command", ["compress", "inspect", "extract"])
def test_the_input_size_is_called_input_wxh(command):
    text = help_text(command)
    assert "--input" in text and "WxH" in text and "--size" not in text


def test_demo_help_makes_no_unmeasured_run_time_claim():
    assert "half an hour" not in help_text("demo") and "README" in help_text("demo")
