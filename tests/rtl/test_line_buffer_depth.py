"""The line-buffer depth the cost model assumes (`chipq inspect --hw`) is the one the RTL engine has.

`rtl/chipq_conv_core.v` (the engine of rtl/chipq_conv_engine.v and rtl/chipq_network.v) streams one input plane at a time through `lines`: MAX_W + 1 words of
{row y-2, row y-1}, two 9-bit activations each. The line-buffered SRAM figure keeps CONV_LINE_ROWS
input rows per channel of a conv; both must say 2 rows (one extra word: the flush column).
"""

from __future__ import annotations

import re

from rtlsim import RTL

from chipq.reports.hwcost import CONV_LINE_ROWS

ACTIVATION_BITS = 9  # the engine's activation word: signed 9-bit (x0 = p - mean), 0..255 after


def test_the_cost_model_keeps_as_many_rows_as_the_engines_line_buffer():
    source = (RTL / "chipq_conv_core.v").read_text()
    match = re.search(r"reg\s+\[(\d+):0\]\s+lines\s+\[0:MAX_W\];", source)
    assert match, "rtl/chipq_conv_core.v: the line buffer `lines` is no longer declared as the test expects"
    width = int(match.group(1)) + 1
    assert width % ACTIVATION_BITS == 0 and width // ACTIVATION_BITS == CONV_LINE_ROWS
    assert "{row sy-2, row sy-1}" in source
