"""Driving rtl/chipq_conv_engine.v from a cocotb testbench: the steps every bench shares."""

from __future__ import annotations

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

PERIOD_NS = 10
LAYER_REGISTERS = ("in_ch", "out_ch", "h", "w", "m", "alpha_bits", "pruned", "bias_shift", "out_shift")


async def start_layer(dut, case: dict) -> None:
    """Start the clock, reset, load the layer registers from `case` and pulse `start`.

    Returns after the rising edge that samples `start`: cycle 1 of the layer.
    """
    Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    dut.start.value = 0
    dut.in_we.value = 0
    dut.in_waddr.value = 0
    dut.in_wdata.value = 0
    dut.out_raddr.value = 0
    for port in LAYER_REGISTERS:
        getattr(dut, f"cfg_{port}").value = case[port]
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
