"""cocotb testbench of rtl/chipq_network.v: the whole network from one start pulse (test_network.py).

The case file ($CHIPQ_RTL_CASE, written by network_run.py) names per stage the golden output of its
last layer (the conv, or the max-pool fused into it) as a .npy file. The ROMs, the layer table and
(unless `host_input`) the input map were loaded from `$readmemh` images named by plusargs.

- `step`: the sequencer stops after every stage; the bench reads the stage's output through the host
  port and the `cycles` counter, checks the output equal to golden and resumes it. After the last
  stage, `done`.
- else: the network runs untouched from start to done (Python idle: the simulator's own speed);
  the cycles are also taken from the simulation time and must equal the counter. Only the final map
  is read.

Either way it writes what it measured (per-stage counter values, total) to `result_file`.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time
from engine_drive import PERIOD_NS


async def _read_map(dut, shape: tuple[int, ...]) -> np.ndarray:
    """The map the last stage wrote, through the host port (element (c, y, x) at (c*H + y)*W + x)."""
    got = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    for address in range(got.size):
        dut.host_raddr.value = address
        await Timer(1, "ns")
        got[address] = int(dut.host_rdata.value)
    return got.reshape(shape)


def _check(label: str, got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape, (label, got.shape, expected.shape)
    wrong = np.argwhere(got != expected)
    detail = ", ".join(f"{tuple(int(v) for v in at)}: {got[tuple(at)]} != {expected[tuple(at)]}" for at in wrong[:5])
    assert wrong.size == 0, f"{label}: {len(wrong)} of {expected.size} outputs differ from golden: {detail}"


async def _reset(dut, case: dict) -> None:
    Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
    for port in ("rst", "start", "step", "resume", "host_we", "host_waddr", "host_wdata", "host_raddr"):
        getattr(dut, port).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.step.value = int(case["step"])
    if case.get("host_input"):  # the input map through the host port instead of $readmemh
        words = np.load(case["input_npy"]).reshape(-1).astype(np.int64) & 0x1FF
        dut.host_we.value = 1
        for address, word in enumerate(words.tolist()):
            dut.host_waddr.value = address
            dut.host_wdata.value = word
            await RisingEdge(dut.clk)
        dut.host_we.value = 0


@cocotb.test()
async def network_runs(dut):
    with open(os.environ["CHIPQ_RTL_CASE"]) as handle:
        case = json.load(handle)
    stages = case["stages"]
    await _reset(dut, case)
    dut.start.value = 1
    await RisingEdge(dut.clk)  # the edge that samples start: cycle 1
    started = get_sim_time("ns")
    dut.start.value = 0
    counters = []
    if case["step"]:
        for number, stage in enumerate(stages):
            await RisingEdge(dut.layer_done)
            await ReadOnly()
            assert int(dut.stage.value) == number and not int(dut.done.value)
            counters.append(int(dut.cycles.value))
            await Timer(1, "ns")
            expected = np.load(stage["expected_npy"])
            _check(stage["label"], await _read_map(dut, expected.shape), expected)
            dut._log.info("%s: %d outputs equal to golden, counter %d", stage["label"], expected.size, counters[-1])
            dut.resume.value = 1
            await RisingEdge(dut.clk)
            dut.resume.value = 0
            await ReadOnly()
            assert int(dut.done.value) == (number == len(stages) - 1), f"done after stage {number}"
        await Timer(1, "ns")
        total = int(dut.cycles.value)
    else:
        await RisingEdge(dut.done)
        await ReadOnly()
        # done rises in the delta after an edge: that edge is the last one counted
        total = 1 + round((get_sim_time("ns") - started) / PERIOD_NS)
        assert int(dut.cycles.value) == total, (int(dut.cycles.value), total)
        await Timer(1, "ns")
        expected = np.load(stages[-1]["expected_npy"])
        _check(stages[-1]["label"], await _read_map(dut, expected.shape), expected)
    with open(case["result_file"], "w") as handle:
        json.dump({"counters": counters, "total": total}, handle)
    dut._log.info("%d stages, %d cycles", len(stages), total)
