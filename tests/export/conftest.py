"""The C model exported and built once per session: a plain build and one under ASan + UBSan."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from chipq.export import export_blob

REPO = Path(__file__).resolve().parents[2]
WARNINGS = "-std=c99 -O2 -Wall -Wextra -pedantic"
SANITIZE = "-std=c99 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"


def make(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    """`make -C folder` with the system cc; a missing compiler fails the test, it is not skipped."""
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.fail("the C model tests need `cc` and `make` (Debian: build-essential)")
    return subprocess.run(["make", "-C", str(folder), *extra], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def c_export(tmp_path_factory) -> Path:
    """`chipq export samples/tiny.blob --format c` into a fresh folder."""
    out = tmp_path_factory.mktemp("cexport") / "c"
    export_blob(REPO / "samples" / "tiny.blob", "c", out)
    return out


@pytest.fixture(scope="session")
def chipq_ref(c_export) -> Path:
    """The exported Makefile's own build (default flags), required free of warnings."""
    done = make(c_export)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", f"the build printed warnings:\n{done.stderr}"
    return c_export / "chipq_ref"


@pytest.fixture(scope="session")
def chipq_ref_asan(c_export, tmp_path_factory) -> Path:
    """The same sources built with AddressSanitizer and UBSan, every report fatal."""
    folder = tmp_path_factory.mktemp("asan")
    for name in ("chipq_ref.c", "Makefile"):
        shutil.copyfile(c_export / name, folder / name)
    done = make(folder, f"CFLAGS={SANITIZE}", "LDFLAGS=-fsanitize=address,undefined")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "chipq_ref"
