"""Build and run a cocotb testbench on Icarus Verilog from pytest (cocotb's runner API).

A missing simulator or cocotb is a test failure, not a skip: the RTL check is part of CI
(`.ci/run` installs Icarus Verilog; cocotb comes with the `test` extra).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

from helpers import REPO

HERE = Path(__file__).resolve().parent
RTL = REPO / "rtl"
SOURCES = sorted(RTL.glob("chipq_*.v"))


def require_icarus() -> str:
    """The iverilog path; fails the calling test (never skips) when it is missing."""
    path = shutil.which("iverilog")
    if path is None:
        raise AssertionError("iverilog not found: install Icarus Verilog (apt-get install -y iverilog); .ci/run does")
    return path


def verilog_string(text: str | os.PathLike) -> str:
    """A Verilog string literal for a parameter override (the runner passes values literally)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_cocotb(
    toplevel: str,
    test_module: str,
    build_dir: Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    case: Mapping[str, Any] | None = None,
    test_filter: str | None = None,
) -> None:
    """Compile `toplevel` from rtl/ and run the cocotb tests of `test_module` (a file beside this one).

    Args:
        test_filter: run only the cocotb tests whose names match this regular expression.
        case: JSON-able data for the testbench, handed over in a file named by $CHIPQ_RTL_CASE.

    Raises:
        SystemExit: from cocotb's runner when a cocotb test fails (pytest reports it as a failure).
    """
    require_icarus()
    from cocotb_tools.runner import get_runner

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # the runner hands sys.path to the simulator's Python
    build_dir.mkdir(parents=True, exist_ok=True)
    env = {}
    if case is not None:
        case_file = build_dir / "case.json"
        case_file.write_text(json.dumps(case))
        env["CHIPQ_RTL_CASE"] = str(case_file)
    runner = get_runner("icarus")
    runner.build(
        sources=SOURCES,
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        parameters=dict(parameters or {}),
        timescale=("1ns", "1ps"),
        always=True,
    )
    runner.test(
        hdl_toplevel=toplevel, test_module=test_module, build_dir=build_dir, extra_env=env, test_filter=test_filter
    )
