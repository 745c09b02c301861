"""How many clock cycles rtl/chipq_conv_engine.v takes for one conv layer, and rtl/chipq_network.v
for a whole network (their schedules, in Python).

The testbenches measure the cycles and `test_engine.py` / `test_network.py` check them equal to this
model, so the model can report the cycles of whole real layers that are too slow to simulate (SPEC 3.5:
what kernel pruning saves on this engine). The schedules are the ones the RTL's header comments describe.
"""

from __future__ import annotations

import numpy as np

from chipq.export.memimage import network_stages
from chipq.formats.model import ChipModel, ConvLayer

DRAIN = 2  # cycles after a plane's last stream position
START = 1  # the cycle that samples `start`
SCAN_W = 32  # the engine's default: presence bits counted per scan cycle
SEQ_STAGE = 2  # chipq_network: a stage's entry read, and the cycle after the core's done
SEQ_START = 1  # chipq_network: the cycle that samples `start`


def engine_cycles(
    layer: ConvLayer, height: int, width: int, lanes: int, scan_w: int = SCAN_W, pool: bool = False
) -> dict[str, int]:
    """Cycles from `start` to `done` for `layer` on a height x width map, by phase; `pool`: the 2x2
    max-pool after it fused into the write-back (4 cycles per pooled pixel, an odd row or column unread).

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
        parts["requant"] += live.shape[0] * (4 * (height // 2) * (width // 2) if pool else height * width)
    parts["total"] = START + parts["scan"] + parts["load"] + parts["stream"] + parts["requant"]
    return parts


def network_cycles(model: ChipModel, lanes: int, scan_w: int = SCAN_W) -> list[dict]:
    """Per stage of rtl/chipq_network.v (a conv and its fused pool) on `model`'s input size: the core's
    cycles (`engine_cycles`) plus the sequencer's SEQ_STAGE; the first stage also has SEQ_START.

    Returns:
        One row per stage: ``conv``, ``pool`` (its name or None), ``map`` (the conv's input H x W),
        ``cycles``, and ``engine`` (the core's parts).
    """
    stages = network_stages(model)
    if isinstance(stages, str):
        raise ValueError(stages)
    rows = []
    for number, stage in enumerate(stages):
        layer = model.layers[stage["conv"]]
        assert isinstance(layer, ConvLayer)
        height, width, pool = stage["height"], stage["width"], stage["pool"] is not None
        engine = engine_cycles(layer, height, width, lanes, scan_w, pool)
        rows.append({"conv": layer.name, "pool": model.layers[stage["pool"]].name if pool else None,
                     "map": f"{height}x{width}", "engine": engine,
                     "cycles": engine["total"] + SEQ_STAGE + (SEQ_START if number == 0 else 0)})  # fmt: skip
    return rows
