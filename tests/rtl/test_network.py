"""The RTL runs the whole network from one start pulse: rtl/chipq_network.v, the layer sequencer.

`network_run.run_network`: the network images of `chipq export --format hex` (layer table and
whole-network ROMs) in the sequencer's ROMs, the input map in activation SRAM A, one `start`; every
stage (a conv, with the max-pool after it fused into its write-back) pauses for the bench to read its
output through the host port, equal to golden, and the cycle counter equals the schedule model
(`engine_cycles.network_cycles`) per stage and in total; the rows are tabled beside the cost model's
`ceil(MACs / (LANES * 9))`.

Synthetic networks run in every session (seconds on Icarus; one also on Verilator, untouched from
start to done). The real VGG-16 (13 stages, 4 pools fused, a 16x16 crop of a real photo, down to
conv5_3 at 1x1; v1 `3x7,1x6` and its pruned v2 version) is marked slow and runs on Verilator:
docs/handoff.md has the cycle table and the time.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SAMPLES
from network_run import crop_model, cycle_table, photo_crop, run_network
from real_pruned import prune_model

from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model

PHOTO = SAMPLES / "photos" / "china.jpg"


def test_a_synthetic_network_runs_on_the_sequencer(tmp_path):
    """Two pools on odd sizes (9x10 -> 4x5 -> 2x2: a row, then a column dropped), 3-, 1- and 2-bit
    masks, 4 lanes that do not divide the channels; the input map written through the host port."""
    model = random_model([3, 1, 2], [6, "M", 5, "M", 4], input_hw=(9, 10), seed=2)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 9, 10), dtype=np.uint8)
    rows = run_network(model, pixels, tmp_path, lanes=4, host_input=True)
    assert [row["layer"] for row in rows] == ["conv1_1 + pool1", "conv2_1 + pool2", "conv3_1"]
    print(cycle_table(rows))


V2_MODEL = dict(input_hw=(6, 8), seed=4, alpha_bits=[3, 8, 5, 2], keep=[0.6, 0.3, 0.0, 0.5])


@pytest.mark.parametrize("simulator, step", [("icarus", True), ("verilator", False)])
def test_a_synthetic_v2_network_runs_on_the_sequencer(tmp_path, simulator, step):
    """Chip format v2: narrow alphas, pruned kernels, a layer with no kernel kept (its output is its
    bias alone) between two pruned ones, a pool, a non-square map, 3 lanes, 4-bit presence scans. On
    Verilator (the real networks' simulator; one build) it runs untouched from start to done."""
    model = random_model([2, 3, 1, 2], [5, "M", 6, 3, 4], **V2_MODEL)
    pixels = np.random.default_rng(2).integers(0, 256, (3, 6, 8), dtype=np.uint8)
    rows = run_network(model, pixels, tmp_path, lanes=3, scan_w=4, simulator=simulator, step=step)
    assert len(rows) == 4 and model.layers[3].kept_kernels() == 0
    print(cycle_table(rows))


@pytest.mark.slow
def test_the_real_vgg16_runs_whole_on_the_sequencer(real_vgg16_blob, tmp_path):
    """The real `3x7,1x6` VGG-16 on a 16x16 crop of a real photo (conv5_3 at 1x1): 13 stages."""
    model = from_bytes(real_vgg16_blob)
    rows = run_network(crop_model(model, 16), photo_crop(model, 16, PHOTO), tmp_path, lanes=16, simulator="verilator")
    assert len(rows) == 13 and sum(" + pool" in row["layer"] for row in rows) == 4
    print(cycle_table(rows))
    print({key: round(value, 1) for key, value in rows[0]["seconds"].items()})


@pytest.mark.slow
def test_the_real_pruned_vgg16_runs_whole_on_the_sequencer(real_vgg16_blob, tmp_path):
    """The same, chip format v2: half of every layer's kernels pruned, 5-bit alphas (`real_pruned`);
    the same build as the v1 run (the same sizes)."""
    model = prune_model(from_bytes(real_vgg16_blob), keep=0.5, alpha_bits=5)
    rows = run_network(crop_model(model, 16), photo_crop(model, 16, PHOTO), tmp_path, lanes=16, simulator="verilator")
    assert len(rows) == 13
    print(cycle_table(rows))
    print({key: round(value, 1) for key, value in rows[0]["seconds"].items()})
