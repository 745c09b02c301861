"""How many clock cycles rtl/chipq_conv_engine.v takes for one conv layer (its schedule, in Python).

The testbench measures the engine's cycles and `test_engine.py` checks them equal to this model, so the
model can report the cycles of whole real layers that are too slow to simulate (SPEC 3.5: what kernel
pruning saves on this engine). The schedule is the one the engine's header comment describes.
"""

from __future__ import annotations

import numpy as np

from chipq.formats.model import ConvLayer

DRAIN = 2  # cycles after a plane's last stream position
START = 1  # the cycle that samples `start`
SCAN_W = 32  # the engine's default: presence bits counted per scan cycle


def engine_cycles(layer: ConvLayer, height: int, width: int, lanes: int, scan_w: int = SCAN_W) -> dict[str, int]:
    """Cycles from `start` to `done` for `layer` on a height x width map, by phase.

    Returns:
        ``total`` and its parts: ``scan`` (presence scans), ``load`` (kernel loads), ``stream``
        (streamed planes with their drain), ``requant``; ``planes_skipped`` counts skipped planes.
    """
    out_ch, in_ch = layer.out_channels, layer.in_channels
    present = np.ones((out_ch, in_ch), bool) if layer.present is None else layer.present
    parts = dict(scan=0, load=0, stream=0, requant=0, planes_skipped=0)
    per_plane = (height + 1) * (width + 1) + DRAIN
    for group in range(0, out_ch, lanes):
        live = present[group : group + lanes]
        if layer.pruned and lanes > 1:
            parts["scan"] += (lanes - 1) * -(-in_ch // scan_w) + 1
        streamed = False
        for plane in range(in_ch):
            parts["load"] += lanes + 1
            last = plane == in_ch - 1
            if layer.pruned and not live[:, plane].any() and not (last and not streamed):
                parts["planes_skipped"] += 1
                continue
            parts["stream"] += per_plane
            streamed = True
        parts["requant"] += live.shape[0] * height * width
    parts["total"] = START + parts["scan"] + parts["load"] + parts["stream"] + parts["requant"]
    return parts
