"""rtl/ is strict Verilog-2005 (Icarus, every warning on; Verilator -Wall less waived warnings) and synthesizable (yosys)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from rtlsim import RTL, SOURCES, VERILATOR_WAIVERS, require_icarus, require_verilator

PRIMITIVES = ["chipq_mask_decode", "chipq_kernel_decode", "chipq_mac3x3", "chipq_requant", "chipq_maxpool2x2"]
ENGINES = ["chipq_conv_core", "chipq_weight_roms", "chipq_conv_engine", "chipq_network"]  # memories inside: elaborated small, not synthesized alone
# The engine and the sequencer at a small size: memories stay memories (memory -nomap), so the check takes seconds.
SMALL_NETWORK = "-set LANES 2 -set MAX_W 8 -set MAX_HW 64 -set ACT_DEPTH 256 -set K_DEPTH 64 -set B_DEPTH 8 -set P_DEPTH 64 -set T_DEPTH 4 -set SCAN_W 4"
SMALL_ENGINE = "-set LANES 2 -set MAX_W 8 -set MAX_HW 64 -set IN_DEPTH 256 -set OUT_DEPTH 256 -set K_DEPTH 64 -set B_DEPTH 8 -set P_DEPTH 64 -set SCAN_W 4"


def test_icarus_accepts_rtl_as_verilog_2005_without_a_warning(tmp_path):
    iverilog = require_icarus()
    assert [path.name for path in SOURCES] == sorted(f"{name}.v" for name in PRIMITIVES + ENGINES)
    result = subprocess.run(
        [iverilog, "-g2005", "-Wall", "-o", str(tmp_path / "all.vvp"), *map(str, SOURCES)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def _yosys(script: str) -> str:
    yosys = shutil.which("yosys")
    if yosys is None:
        pytest.skip("yosys not installed (optional synthesis check; .ci/run installs it)")
    result = subprocess.run([yosys, "-q", "-p", script], capture_output=True, text=True, cwd=RTL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("top", PRIMITIVES)
def test_yosys_synthesizes_each_primitive(top):
    files = " ".join(path.name for path in SOURCES if path.stem not in ENGINES)
    log = _yosys(f"read_verilog {files}; synth -top {top}; check -assert")
    assert "warning" not in log.lower(), log


@pytest.mark.parametrize("top, sizes", [("chipq_conv_engine", SMALL_ENGINE), ("chipq_network", SMALL_NETWORK)])
def test_yosys_elaborates_the_engine_and_the_sequencer_with_no_problem(top, sizes):
    files = " ".join(path.name for path in SOURCES)
    log = _yosys(
        f"read_verilog {files}; chparam {sizes} {top}; hierarchy -check -top {top}; "
        "proc; flatten; opt; memory -nomap; opt; check -assert"
    )
    assert "warning" not in log.lower(), log


@pytest.mark.parametrize("top", ["chipq_network", "chipq_conv_engine", "chipq_maxpool2x2"])
def test_verilator_lints_the_rtl_clean_but_for_the_waived_warnings(top):
    """Verilator -Wall, less the warnings `rtlsim.VERILATOR_WAIVERS` waives (each with its reason)."""
    verilator = require_verilator()
    waivers = [f"-Wno-{name}" for name in VERILATOR_WAIVERS]
    result = subprocess.run(
        [verilator, "--lint-only", "-Wall", *waivers, "--top-module", top, *map(str, SOURCES)], capture_output=True, text=True
    )
    assert result.returncode == 0 and "%Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
