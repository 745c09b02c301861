"""Progress a person can see anywhere: rich's live display in a terminal, plain lines elsewhere.

When stderr is not a terminal (a pipe, a log file, CI) a live display prints nothing useful, so
long commands write plain lines instead::

    chipq compress: retraining 40/60 (66%) loss 0.0123 cos 0.9310 [1m20s]

A line is written when the stage changes, when the work advanced by 5 % since the last line, and
at least every 10 s while the command runs (a heartbeat thread repeats the current state, so a
long stage without callbacks still shows it is alive). Nothing is written in the first 10 s: a
command that fails on bad input at once leaves exactly its one error line on stderr.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape

DEFAULT_INTERVAL = 10.0  # seconds: the longest silence allowed (CHIPQ_PROGRESS_SECONDS overrides it)
STEP_SHARE = 0.05  # a line for every 5 % of a counted stage


class ProgressLog:
    """Plain progress lines for a non-terminal stderr (thread-safe; `close` stops the heartbeat)."""

    def __init__(self, command: str, console: Console, interval: float | None = None, grace: float | None = None) -> None:
        self.command, self.console = command, console
        self.interval = interval if interval is not None else float(os.environ.get("CHIPQ_PROGRESS_SECONDS", DEFAULT_INTERVAL))
        self.grace = self.interval if grace is None else grace  # silent start
        self._lock = threading.Lock()
        self._stage, self._done, self._total, self._extra = "starting", None, None, ""
        self._printed_done: int | None = None
        self._start = self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def update(self, stage: str, done: int | None = None, total: int | None = None, extra: str = "") -> None:
        """Record the current state; print a line if the stage changed or 5 % more is done."""
        with self._lock:
            changed = stage != self._stage
            self._stage, self._done, self._total, self._extra = stage, done, total, extra
            due = changed or self._advanced()
            if due and time.monotonic() - self._start >= self.grace:
                self._print()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval)

    def _advanced(self) -> bool:
        if self._done is None or not self._total:
            return False
        if self._printed_done is None or self._done >= self._total:
            return self._printed_done != self._done
        return (self._done - self._printed_done) >= STEP_SHARE * self._total

    def _beat(self) -> None:
        while not self._stop.wait(max(0.01, min(1.0, self.interval / 4))):
            with self._lock:
                if time.monotonic() - self._last >= self.interval:
                    self._print()

    def _print(self) -> None:
        count = ""
        if self._done is not None and self._total:
            count = f" {self._done}/{self._total} ({100 * self._done // self._total}%)"
        elif self._done is not None:
            count = f" {self._done}"
        extra = f" {self._extra}" if self._extra else ""
        elapsed = _clock(time.monotonic() - self._start)
        self.console.print(
            f"chipq {self.command}: {escape(self._stage)}{count}{escape(extra)} [{elapsed}]",
            highlight=False, markup=True, soft_wrap=True,
        )
        self._printed_done, self._last = self._done, time.monotonic()


def _clock(seconds: float) -> str:
    """``"1m20s"``-style elapsed time.

    >>> _clock(80.4), _clock(3725)
    ('1m20s', '1h02m05s')
    """
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Status:
    """One progress interface for a command: a rich status line in a terminal, `ProgressLog` lines
    otherwise. ``update(stage, done, total, extra)``."""

    def __init__(self, command: str, console: Console, quiet: bool = False) -> None:
        self.terminal = console.is_terminal
        self._rich = console.status("starting") if self.terminal and not quiet else None
        self._log = None if self.terminal else ProgressLog(command, console)

    def update(self, stage: str, done: int | None = None, total: int | None = None, extra: str = "") -> None:
        if self._log is not None:
            self._log.update(stage, done, total, extra)
        elif self._rich is not None:
            count = f" {done}/{total}" if done is not None and total else (f" {done}" if done is not None else "")
            self._rich.update(escape(f"{stage}{count} {extra}".rstrip()))

    def start(self) -> None:
        if self._rich is not None:
            self._rich.start()

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        if self._log is not None:
            self._log.close()


@contextmanager
def status(command: str, console: Console, quiet: bool = False) -> Iterator[Status]:
    """A `Status` for the duration of a block."""
    shown = Status(command, console, quiet)
    shown.start()
    try:
        yield shown
    finally:
        shown.stop()
