"""Building the exported C model in tests: compiler flags and `make`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WARNINGS = "-std=c99 -O2 -Wall -Wextra -pedantic"
SANITIZE = "-std=c99 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"


def make(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    """`make -C folder` with the system cc; a missing compiler fails the test, it is not skipped."""
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.fail("the C model tests need `cc` and `make` (Debian: build-essential)")
    return subprocess.run(["make", "-C", str(folder), *extra], capture_output=True, text=True, timeout=300)
