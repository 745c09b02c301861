"""The C model exported and built once per session: a plain build and one under ASan + UBSan."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cmodel_build import SANITIZE, WARNINGS, make  # noqa: F401
from helpers import REPO

from chipq.export import export_blob
from chipq.export.c_model import SOURCES


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
    for name in SOURCES:
        shutil.copyfile(c_export / name, folder / name)
    done = make(folder, f"CFLAGS={SANITIZE}", "LDFLAGS=-fsanitize=address,undefined")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "chipq_ref"
