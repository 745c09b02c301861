"""The RTL runs the whole network: every conv and max-pool of a chip model chained on the RTL.

`network_run.run_network`: conv layers on rtl/chipq_conv_engine.v (ROMs from the exported images, the
input SRAM loaded with the previous layer's RTL output), max-pools through rtl/chipq_maxpool2x2.v;
every layer's output equal to golden, every conv's cycles equal to the engine's schedule model and
reported beside the cost model's `ceil(MACs / (LANES * 9))`.

Synthetic networks run in every session (seconds; on Icarus and on Verilator). The real VGG-16
(all 13 convs and 4 pools, a 16x16 crop of a real photo, down to conv5_3 at 1x1) is marked slow and
runs on Verilator: 3,033,213 engine cycles at 16 lanes, 122-138 s with the engine's build on a busy
2-core machine (957 s on Icarus; docs/handoff.md has the per-layer cycle table).
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


def test_a_synthetic_network_runs_chained_on_the_rtl(tmp_path):
    """Two pools, 3-, 1- and 2-bit masks, a non-square map, 4 lanes that do not divide the channels."""
    model = random_model([3, 1, 2], [6, "M", 5, "M", 4], input_hw=(8, 10), seed=2)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 8, 10), dtype=np.uint8)
    rows = run_network(model, pixels, tmp_path, lanes=4)
    assert [row["layer"] for row in rows] == [layer.name for layer in model.layers]
    print(cycle_table(rows))


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_a_synthetic_v2_network_runs_chained_on_the_rtl(tmp_path, simulator):
    """Chip format v2: narrow alphas, pruned kernels, a layer with none kept. Also on Verilator (the
    real networks' simulator; one build, ~30 s here): every plusarg image, the presence ROM's too."""
    model = random_model([2, 3, 1], [5, "M", 6, 3], input_hw=(6, 8), seed=4, alpha_bits=[3, 8, 5], keep=[0.6, 0.3, 0.0])
    pixels = np.random.default_rng(2).integers(0, 256, (3, 6, 8), dtype=np.uint8)
    run_network(model, pixels, tmp_path, lanes=3, scan_w=4, simulator=simulator)


@pytest.mark.slow
def test_the_real_vgg16_runs_whole_on_the_rtl(real_vgg16_blob, tmp_path):
    """Every layer of the real `3x7,1x6` VGG-16 on a 16x16 crop of a real photo (conv5_3 at 1x1)."""
    model = from_bytes(real_vgg16_blob)
    rows = run_network(crop_model(model, 16), photo_crop(model, 16, PHOTO), tmp_path, lanes=16, simulator="verilator")
    assert len(rows) == len(model.layers) == 17
    print(cycle_table(rows))


@pytest.mark.slow
def test_the_real_pruned_vgg16_runs_whole_on_the_rtl(real_vgg16_blob, tmp_path):
    """The same, chip format v2: half of every layer's kernels pruned, 5-bit alphas (`real_pruned`)."""
    model = prune_model(from_bytes(real_vgg16_blob), keep=0.5, alpha_bits=5)
    rows = run_network(crop_model(model, 16), photo_crop(model, 16, PHOTO), tmp_path, lanes=16, simulator="verilator")
    assert len(rows) == 17
    print(cycle_table(rows))
