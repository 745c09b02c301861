"""--help of every command: flags shown as flags, the input size option named the same everywhere."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from chipq.cli import app

COMMANDS = ["fetch-vgg16", "compress", "plan", "inspect", "verify", "export", "extract", "eval", "demo"]


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


def test_help_texts_say_what_ships_and_what_verify_runs_on():
    from chipq.data import default_photos_dir

    shipped = len(list(default_photos_dir().glob("*.jpg")))
    compress = " ".join(help_text("compress").split())
    assert f"({shipped} licensed real photos)" in compress and f"({shipped} photos)" in compress
    verify = " ".join(help_text("verify").split())
    assert "never the calibration photos" in verify and "not calibration photos" in verify


@pytest.mark.parametrize("command", ["compress", "export", "fetch-vgg16", "demo"])
def test_what_a_command_writes_is_o_output(command):
    text = help_text(command)
    assert "--output" in text and "-o" in text
    for old in ("--out ", "--out-dir", "--workdir"):
        assert old not in text  # hidden aliases


def test_plan_short_b_is_gone_and_sensitivity_is_a_choice():
    assert "weight-only" in help_text("plan")
    result = CliRunner().invoke(app, ["plan", "m.pt", "-b", "4MB"])
    assert result.exit_code == 2  # -b is --blob elsewhere; plan's budget is --budget only
    result = CliRunner().invoke(app, ["plan", "m.pt", "--budget", "4MB", "--sensitivity", "exact"])
    assert result.exit_code == 2
