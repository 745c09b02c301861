"""tests/helpers.py's shared-fixture file: made by the first caller, read by the others."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO, made_once

MAKER = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from helpers import made_once

def make():
    Path({log!r}).open("a").write("made\\n")
    time.sleep(0.5)  # long enough for the other process to ask while this one writes
    return b"blob"

print(made_once(Path({path!r}), make).decode())
"""


def test_made_once_makes_the_file_once_for_two_processes_asking_together(tmp_path):
    path, log = tmp_path / "x.blob", tmp_path / "made.log"
    code = MAKER.format(tests=str(REPO / "tests"), log=str(log), path=str(path))
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert [run.communicate(timeout=60)[0].strip() for run in runs] == ["blob", "blob"]
    assert log.read_text() == "made\n"
    assert made_once(path, lambda: b"other") == b"blob"  # a later caller reads what is there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made.log", "x.blob", "x.blob.lock"]  # no partial file left
