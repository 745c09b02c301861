"""The cost model of `chipq inspect --hw`, against numbers worked out by hand on the tiny model."""

from __future__ import annotations

import json

import pytest
from helpers import run_main

from chipq.errors import UsageError
from chipq.formats.writer import to_bytes
from chipq.reports.hwcost import Hardware, hardware_cost, parse_hw

# tiny_model: conv1_1 3->4 (3-bit), pool1, conv2_1 4->8 (1-bit), 16x16 input buffer.
# conv1_1: 4*3*9*16*16 = 27,648 MACs, ceil(/10) = 2,765 cycles, 12*(27+8) + 4*12 = 468 weight bits,
#          SRAM 3*256 + 4*256 = 1,792 B; stored 12 + 6 + ceil(12*27/8) = 59 B
# pool1:   0 cycles (fused), SRAM 4*256 + 4*64 = 1,280 B
# conv2_1: 8*4*9*8*8 = 18,432 MACs, 1,844 cycles, 32*(9+8) + 8*12 = 640 bits, SRAM 4*64 + 8*64 = 768 B;
#          stored 32 + 12 + 36 = 80 B
# frame: 4,609 cycles at 100 MHz = 46.09 us, 21,696.68 frames/s; NIP 4 frames = 18,436 cycles;
# RNIP-9 of 640x480: 9 crops x 4 = 36 frames = 165,924 cycles = 1.65924 ms.
HW = Hardware(macs=10, mhz=100.0)


def test_per_layer_numbers_by_hand(tiny_model):
    cost = hardware_cost(tiny_model, HW)
    conv1, pool, conv2 = cost["layers"]
    assert (conv1["macs"], conv1["cycles"], conv1["weight_bits"], conv1["sram_bytes"]) == (27_648, 2_765, 468, 1_792)
    assert (pool["macs"], pool["cycles"], pool["sram_bytes"]) == (0, 0, 1_280)
    assert (conv2["macs"], conv2["cycles"], conv2["weight_bits"], conv2["sram_bytes"]) == (18_432, 1_844, 640, 768)
    assert conv2["map_hw"] == [8, 8] and conv1["ms"] == pytest.approx(2_765 / 100e3)


def test_totals_by_hand(tiny_model):
    totals = hardware_cost(tiny_model, HW)["totals"]
    assert totals["cycles_per_frame"] == 4_609 and totals["macs_per_frame"] == 46_080
    assert totals["ms_per_frame"] == pytest.approx(0.04609)
    assert totals["frames_per_second"] == pytest.approx(1e8 / 4_609)
    assert (totals["nip"]["frames"], totals["nip"]["cycles"]) == (4, 18_436)
    assert totals["nip"]["ms"] == pytest.approx(0.18436)
    rnip = totals["rnip"]
    assert (rnip["crops"], rnip["frames"], rnip["cycles"]) == (9, 36, 165_924)
    assert rnip["ms"] == pytest.approx(1.65924)
    assert (totals["weight_rom_bits"], totals["weight_rom_bytes"]) == (1_108, 139)
    assert (totals["sram_bytes"], totals["sram_peak_layer"]) == (1_792, "conv1_1")


def test_a_larger_frame_scales_the_rows_but_not_the_descriptors(tiny_model):
    small = hardware_cost(tiny_model, HW)["totals"]
    large = hardware_cost(tiny_model, HW, frame_hw=(32, 48))["totals"]
    # 6x the pixels: ceil(6 * 27,648 / 10) + ceil(6 * 18,432 / 10) = 16,589 + 11,060
    assert large["cycles_per_frame"] == 16_589 + 11_060
    assert large["nip"] == small["nip"] and large["sram_bytes"] == small["sram_bytes"]
    assert large["weight_rom_bits"] == small["weight_rom_bits"]


@pytest.mark.parametrize("text", ["256", "0@200", "256@0", "x@1", "256@200MHz", "2000000@1"])
def test_parse_hw_refuses(text):
    with pytest.raises(UsageError, match="--hw"):
        parse_hw(text)


def test_inspect_hw_json_and_table(monkeypatch, capsys, tmp_path, tiny_model):
    blob = tmp_path / "tiny.blob"
    blob.write_bytes(to_bytes(tiny_model))
    code, out, _ = run_main(monkeypatch, capsys, "inspect", str(blob), "--hw", "10@100", "--json")
    assert code in (0, None)
    assert json.loads(out)["hw"]["totals"]["cycles_per_frame"] == 4_609
    code, out, _ = run_main(monkeypatch, capsys, "inspect", str(blob), "--hw", "10@100")
    assert code in (0, None)
    assert "cost model: 10 MACs/cycle at 100 MHz, 16x16 frame" in out
    assert "4,609" in out and "21,697/s" in out and "RNIP-9 of a 640x480 photo" in out
    code, _, err = run_main(monkeypatch, capsys, "inspect", str(blob), "--hw", "fast")
    assert code == 2 and "MACS@MHZ" in err and len(err.strip().splitlines()) == 1
