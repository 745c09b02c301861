"""Plain progress lines when stderr is not a terminal (issue: a 17-minute run printed nothing)."""

from __future__ import annotations

import io
import time

from rich.console import Console

from chipq.cli.progress import ProgressLog, Status


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def test_lines_on_stage_change_and_every_5_percent():
    console, buffer = _console()
    log = ProgressLog("compress", console, interval=60, grace=0)
    log.update("calibrating")
    for done in range(0, 101):
        log.update("retraining", done, 100, extra="loss 0.1")
    log.close()
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("chipq compress: calibrating")
    counted = [line for line in lines if "retraining" in line]
    assert 20 <= len(counted) <= 22  # 0, 5, 10, ..., 100
    assert "retraining 100/100 (100%) loss 0.1" in counted[-1]


def test_a_heartbeat_line_while_nothing_reports():
    console, buffer = _console()
    log = ProgressLog("verify", console, interval=0.2)
    log.update("golden executor")
    time.sleep(0.9)
    log.close()
    assert buffer.getvalue().count("chipq verify: golden executor") >= 3


def test_nothing_in_the_first_seconds():
    """A command that fails at once leaves only its error line: progress starts after the grace time."""
    console, buffer = _console()
    log = ProgressLog("compress", console, interval=0.3)
    log.update("loading model")
    log.update("calibrating", 1, 2)
    time.sleep(0.1)
    assert buffer.getvalue() == ""
    time.sleep(0.5)
    log.close()
    assert "chipq compress: calibrating 1/2 (50%)" in buffer.getvalue()


def test_status_writes_plain_lines_off_a_terminal(monkeypatch):
    monkeypatch.setenv("CHIPQ_PROGRESS_SECONDS", "0.05")
    console, buffer = _console()
    shown = Status("extract", console)
    shown.start()
    shown.update("describing", 3, 10)
    time.sleep(0.3)
    shown.stop()
    assert "chipq extract: describing 3/10 (30%)" in buffer.getvalue()
