"""The reconstruction's spill folder: gone after SIGTERM and Ctrl-C, and a SIGKILL'd run's is removed by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chipq.quant.reconstruct import SPILL_PREFIX, remove_stale_spills

# The child installs Python's own SIGINT handler: a process started in the background by a
# non-interactive shell (as CI may run the suite) inherits SIGINT ignored, and Python then keeps it so.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from chipq.quant.reconstruct import spill_folder
with spill_folder() as folder:
    (folder / "map.bin").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    time.sleep(60)
"""


def _child(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=env)
    folder = Path(proc.stdout.readline().strip())
    assert folder.is_dir() and folder.parent == tmp_path and folder.name.startswith(f"{SPILL_PREFIX}{proc.pid}-")
    return proc, folder


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_removes_its_spill_folder(tmp_path, sig):
    proc, folder = _child(tmp_path)
    proc.send_signal(sig)
    returned = proc.wait(timeout=30)
    assert not folder.exists()
    assert returned == (143 if sig == signal.SIGTERM else -signal.SIGINT)  # KeyboardInterrupt ends by the signal


def test_a_killed_runs_folder_is_removed_by_the_next_run_and_a_live_ones_is_not(tmp_path):
    proc, folder = _child(tmp_path)
    assert remove_stale_spills(tmp_path) == []  # its process still runs
    proc.kill()
    proc.wait(timeout=30)
    assert folder.is_dir()  # SIGKILL: nothing could clean up
    other = tmp_path / "chipq-maps-oldname"  # not the pid form: left alone
    other.mkdir()
    assert remove_stale_spills(tmp_path) == [folder]
    assert not folder.exists() and other.is_dir()


def test_a_sigterm_outside_the_folder_keeps_the_default(tmp_path):
    from chipq.quant.reconstruct import spill_folder

    before = signal.getsignal(signal.SIGTERM)
    with spill_folder() as folder:
        assert folder.is_dir()
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    assert not folder.exists()

