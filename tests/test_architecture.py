"""The layering contract (import-linter) and the lint (ruff) hold on the whole tree.

Both are configured in pyproject.toml and checked by ``.ci/lint``, which CI runs before the tests
(``.ci/run``); these tests run the same script, so a local ``pytest`` checks them too. The script
lays the package out the way it is installed (``chipq.formats`` lives in its own folder) before it
runs import-linter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO

BIN = Path(sys.executable).parent
LINT = REPO / ".ci" / "lint"


def _lint(check: str) -> subprocess.CompletedProcess:
    """Run ``.ci/lint CHECK`` with this Python's tools first on PATH."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    for tool in ("lint-imports", "ruff"):
        assert shutil.which(tool, path=path), f"{tool} is not installed (it is part of the test extra)"
    return subprocess.run([str(LINT), check], cwd=REPO, env={**os.environ, "PATH": path}, capture_output=True, text=True)


def test_import_layers_are_kept():
    run = _lint("imports")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_ruff_is_clean():
    run = _lint("ruff")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
