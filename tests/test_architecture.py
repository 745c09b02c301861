"""The layering contract (import-linter) and the lint (ruff) hold on the whole tree.

Both are configured in pyproject.toml. import-linter finds modules by walking the package folder,
and ``chipq.formats`` lives in its own folder (``formats/``), so the test lays the package out the
way it is installed — a folder ``chipq`` of links to both — and points import-linter at it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed (it is part of the test extra)"
    return path


def test_import_layers_are_kept(tmp_path):
    package = tmp_path / "chipq"
    package.mkdir()
    for entry in (REPO / "compressor").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "formats").symlink_to(REPO / "formats")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([_tool("lint-imports")], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_ruff_is_clean():
    run = subprocess.run(
        [_tool("ruff"), "check", "compressor", "formats", "tests", "bench", "samples"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:]
