"""The line-buffered activation SRAM of `chipq inspect --hw` beside the whole-map figure, by hand.

tiny_model: conv1_1 3->4, pool1, conv2_1 4->8, 16x16 input buffer. Line-buffered (a conv keeps 2 input
rows per channel, a pool 1 row of pairwise maxima, the last layer's rows leave the chip):
  16x16: conv1_1 2*3*16 = 96, pool1 1*4*8 = 32, conv2_1 2*4*8 = 64             -> 192 B, 5 banks
  48x32 (W x H): conv1_1 2*3*48 = 288, pool1 4*24 = 96, conv2_1 2*4*24 = 192  -> 576 B
  window registers 9*3 + 9*4 = 63 B (not SRAM)
Whole maps at 48x32: conv1_1 3*1536 + 4*1536 = 10,752 (peak), pool1 4*1536 + 4*384 = 7,680, conv2_1 4,608.
"""

from __future__ import annotations

import json

from helpers import run_main

from chipq.formats.writer import to_bytes
from chipq.reports.hwcost import Hardware, hardware_cost, line_buffer

HW = Hardware(macs=10, mhz=100.0)


def test_rows_kept_per_layer_by_hand(tiny_model):
    conv1, pool, conv2 = hardware_cost(tiny_model, HW)["layers"]
    assert conv1["line_buffer"] == {"rows": 2, "row_bytes": 48, "bytes": 96, "banks": 2, "ports": "1R1W", "window_register_bytes": 27}
    assert (pool["line_buffer"]["rows"], pool["line_buffer"]["row_bytes"], pool["line_buffer"]["bytes"]) == (1, 32, 32)
    assert (conv2["line_buffer"]["bytes"], conv2["line_buffer"]["window_register_bytes"]) == (64, 36)


def test_totals_at_the_buffer_and_a_larger_frame_by_hand(tiny_model):
    small = hardware_cost(tiny_model, HW)["totals"]
    assert (small["line_buffer_sram_bytes"], small["line_buffer_sram_frame_bytes"]) == (192, 192)
    assert (small["line_buffer_banks"], small["line_buffer_window_register_bytes"]) == (5, 63)
    assert (small["sram_bytes"], small["sram_frame_bytes"]) == (1_792, 1_792)
    large = hardware_cost(tiny_model, HW, frame_hw=(32, 48))["totals"]
    assert (large["line_buffer_sram_frame_bytes"], large["line_buffer_sram_bytes"]) == (576, 192)
    assert (large["sram_frame_bytes"], large["sram_frame_peak_layer"], large["sram_bytes"]) == (10_752, "conv1_1", 1_792)


def test_vgg16_shapes_by_hand():
    """VGG-16 at 224x224 (13 convs, 4 pools, no trailing pool): 288,064 B line-buffered; at 640x480 823,040 B."""
    def total(height, width):
        channels, out = 3, 0
        for item in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
            if item == "M":
                out += line_buffer("maxpool", channels, width)["bytes"]
                height, width = height // 2, width // 2
            else:
                out += line_buffer("conv", channels, width)["bytes"]
                channels = item
        return out

    # 224: 2*3*224 + 2*64*224 + 64*112 + 2*64*112 + 2*128*112 + 128*56 + 2*128*56 + 2*(2*256*56) + 256*28
    #      + 2*256*28 + 2*(2*512*28) + 512*14 + 3*(2*512*14)
    assert total(224, 224) == 1_344 + 28_672 + 7_168 + 14_336 + 28_672 + 7_168 + 14_336 + 57_344 + 7_168 + 14_336 + 57_344 + 7_168 + 43_008 == 288_064
    assert total(480, 640) == 823_040


def test_inspect_shows_both_figures(monkeypatch, capsys, tmp_path, tiny_model):
    blob = tmp_path / "tiny.blob"
    blob.write_bytes(to_bytes(tiny_model))
    code, out, _ = run_main(monkeypatch, capsys, "inspect", str(blob), "--hw", "10@100", "--input", "48x32", "--json")
    assert code in (0, None)
    totals = json.loads(out)["hw"]["totals"]
    assert (totals["sram_frame_bytes"], totals["line_buffer_sram_frame_bytes"], totals["line_buffer_sram_bytes"]) == (10_752, 576, 192)
    code, out, _ = run_main(monkeypatch, capsys, "inspect", str(blob), "--hw", "10@100", "--input", "48x32")
    assert code in (0, None)
    assert "activation SRAM at 48x32, whole maps (peak: conv1_1)" in out and "10,752 B" in out
    assert "activation SRAM at 48x32, line-buffered (5 banks 1R1W" in out and "576 B" in out
    assert "activation SRAM at 16x16 (NIP, RNIP crops), line-buffered" in out and "192 B" in out
    assert "line buf B" in out
