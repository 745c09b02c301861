"""cocotb testbenches for the whole-network RTL run (test_network.py): one conv layer on the engine,
or one max-pool layer through rtl/chipq_maxpool2x2.v; each writes what the RTL produced to a file so
that the next layer's run starts from the RTL's own output, and checks it equal to golden.

Unlike tb_engine.py (which counts every clock edge in Python), the conv bench waits for `done` and
takes the cycles from the simulation time: Python does nothing while the engine runs, so a layer
of a million cycles simulates at the simulator's own speed (Icarus or Verilator).
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time
from engine_drive import PERIOD_NS, start_layer


def _case() -> dict:
    with open(os.environ["CHIPQ_RTL_CASE"]) as handle:
        return json.load(handle)


def _check(dut, case: dict, got: np.ndarray) -> None:
    np.save(case["got_file"], got)
    expected = np.load(case["expected_npy"])
    wrong = np.argwhere(got != expected)
    detail = ", ".join(f"{tuple(int(v) for v in at)}: {got[tuple(at)]} != {expected[tuple(at)]}" for at in wrong[:5])
    assert wrong.size == 0, f"{case['label']}: {len(wrong)} of {expected.size} outputs differ from golden: {detail}"


@cocotb.test()
async def conv_layer(dut):
    case = _case()
    await start_layer(dut, case)  # returns on the edge that samples start: cycle 1, as tb_engine counts
    started = get_sim_time("ns")
    await RisingEdge(dut.done)
    await ReadOnly()
    ended = get_sim_time("ns")
    # done rises in the delta after an edge: that edge is the last one counted
    cycles = 1 + round((ended - started) / PERIOD_NS)
    await RisingEdge(dut.clk)
    out_ch, height, width = case["out_ch"], case["h"], case["w"]
    got = np.zeros(out_ch * height * width, dtype=np.uint8)
    for address in range(got.size):
        dut.out_raddr.value = address
        await Timer(1, "ns")
        got[address] = int(dut.out_rdata.value)
    with open(case["cycles_file"], "w") as handle:
        handle.write(str(cycles))
    _check(dut, case, got.reshape(out_ch, height, width))
    dut._log.info("%s: %d outputs equal to golden, %d cycles", case["label"], got.size, cycles)


@cocotb.test()
async def pool_layer(dut):
    """Every output of a 2x2 max-pool through the combinational chipq_maxpool2x2."""
    case = _case()
    source = np.load(case["input_npy"])
    channels, height, width = source.shape
    got = np.zeros((channels, height // 2, width // 2), dtype=np.uint8)
    for c in range(channels):
        for y in range(height // 2):
            for x in range(width // 2):
                dut.a.value = int(source[c, 2 * y, 2 * x])
                dut.b.value = int(source[c, 2 * y, 2 * x + 1])
                dut.c.value = int(source[c, 2 * y + 1, 2 * x])
                dut.d.value = int(source[c, 2 * y + 1, 2 * x + 1])
                await Timer(1, "ns")
                got[c, y, x] = int(dut.y.value)
    _check(dut, case, got)
    dut._log.info("%s: %d outputs equal to golden", case["label"], got.size)
