"""cocotb testbench of rtl/chipq_conv_engine.v: one conv layer, every output equal to golden.

The case file ($CHIPQ_RTL_CASE, written by test_engine.py) gives the layer registers and the golden
output (`chipq verify --vectors-hex` layout: a `$readmemh` file, C order). The ROMs and the input SRAM
were initialised from the exported memory images and the input vector at elaboration.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge, Timer
from engine_drive import start_layer

from chipq.export.memimage import read_hex


@cocotb.test()
async def conv_layer_equals_golden(dut):
    case = json.loads(open(os.environ["CHIPQ_RTL_CASE"]).read())
    expected = read_hex(case["expected_hex"], 8).tolist()
    await start_layer(dut, case)  # returns on the edge that samples start
    cycles = 1
    while True:  # count the edges until done is set (read after the edge has settled)
        await RisingEdge(dut.clk)
        await ReadOnly()
        cycles += 1
        if int(dut.done.value):
            break
        assert cycles < case["timeout_cycles"], f"no done after {cycles} cycles"
    await RisingEdge(dut.clk)
    with open(case["cycles_file"], "w") as handle:
        handle.write(str(cycles))
    got = []
    for address in range(len(expected)):
        dut.out_raddr.value = address
        await Timer(1, "ns")
        got.append(int(dut.out_rdata.value))
    wrong = [a for a, (g, e) in enumerate(zip(got, expected)) if g != e]
    hw = case["h"] * case["w"]
    detail = ", ".join(f"(o={a // hw}, y={a % hw // case['w']}, x={a % case['w']}): {got[a]} != {expected[a]}" for a in wrong[:5])
    assert not wrong, f"{len(wrong)} of {len(expected)} outputs differ from golden: {detail}"
    nonzero = sum(1 for v in expected if v)
    dut._log.info(
        "%s: %d outputs (%d x %dx%d) equal to golden, %d non-zero, %d cycles",
        case["label"], len(expected), case["out_ch"], case["h"], case["w"], nonzero, cycles,
    )
