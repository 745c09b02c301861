"""`chipq export` (C model and memory images) on hostile chip format v2 blobs, as a user runs it.

The lies are those `tests/export/test_c_model_hostile_v2.py` hands to the C reader (each resealed, so
the v2 check under test is the one reached). `chipq export LIE.blob` must refuse each before writing
anything: exit 2, one stderr line naming the blob and the error, no traceback, the folder unchanged.
The valid v2 blob exports, and `chipq_ref --check` of the exported C model accepts it.
(This file is the hand-off helper's block of the hostile suite; tests/hostile/corpus.py holds the rest.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import chipq_command, diff, snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from test_c_model_hostile_v2 import cases  # noqa: E402

LIES = [case for case in cases() if case[2] is not None]


def export(folder: Path, fmt: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        chipq_command() + ["export", "v2.blob", "-f", fmt, "-o", "out"],
        cwd=folder, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("what, blob, error", LIES, ids=[case[0] for case in LIES])
def test_export_refuses_a_v2_lie_and_writes_nothing(tmp_path, what, blob, error):
    (tmp_path / "v2.blob").write_bytes(blob)
    fmt = "c" if len(what) % 2 else "hex"  # both writers, spread over the cases
    before = snapshot(tmp_path)
    done = export(tmp_path, fmt)
    assert done.returncode == 2, (what, done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "v2.blob" in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert diff(before, snapshot(tmp_path)) == [], what


def test_export_of_the_valid_v2_blob_builds_and_checks(tmp_path):
    (tmp_path / "v2.blob").write_bytes(cases()[0][1])
    done = export(tmp_path, "c")
    assert done.returncode == 0, done.stderr
    build = subprocess.run(["make", "-C", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0 and build.stderr == "", build.stderr
    check = subprocess.run(["out/chipq_ref", "--check", "v2.blob"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and "ok, 3 layers" in check.stdout, check.stdout + check.stderr
