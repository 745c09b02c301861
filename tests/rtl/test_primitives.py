"""The RTL primitives of rtl/ on Icarus Verilog, every output equal to the golden executor."""

from __future__ import annotations

import pytest
from rtlsim import run_cocotb

CASES = {
    "chipq_mask_decode": "mask_decoder_every_code_and_alpha",
    "chipq_mac3x3": "mac3x3_matches_golden_conv_at_the_centre",
    "chipq_requant": "requantiser_rounds_half_up_relu_and_saturates",
    "chipq_maxpool2x2": "maxpool_matches_golden",
}


@pytest.mark.parametrize("toplevel", sorted(CASES))
def test_primitive_equals_golden(toplevel, tmp_path):
    run_cocotb(toplevel, "tb_primitives", tmp_path / toplevel, test_filter=CASES[toplevel])
