"""`inspect` and `inspect --hw` numbers of a chip format v2 model, worked out by hand."""

from __future__ import annotations

import pytest

from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes
from chipq.reports.hwcost import Hardware, hardware_cost
from chipq.reports.inspect import summarize

HW = Hardware(macs=10, mhz=100.0)


@pytest.fixture
def v2_model():
    """tiny_model's shape with conv1_1 at 5-bit alphas and conv2_1 pruned (19 of 32 kernels kept).

    conv1_1 3->4, m 3, a 5, every kernel: alpha ceil(12*5/8) = 8 B, bias 6 B, mask ceil(12*27/8) = 41 B.
    conv2_1 4->8, m 1, a 8, pruned: presence ceil(32/8) = 4 B, alpha 19 B, bias 12 B, mask
    ceil(19*9/8) = 22 B. Blob: 208 B of header and table, then the payloads at 208 and 264: 321 B.
    """
    model = random_model([3, 1], [4, "M", 8], input_hw=(16, 16), seed=1, alpha_bits=[5, 8], keep=[None, 0.5])
    assert [conv.kept_kernels() for conv in model.conv_layers()] == [12, 19]
    return model


def test_rows_and_totals(v2_model):
    blob = to_bytes(v2_model)
    assert len(blob) == 321
    summary = summarize(v2_model, len(blob), crc_ok=True)
    assert summary["format_version"] == 2
    conv1, pool, conv2 = summary["layers"]
    assert (conv1["alpha_bits"], conv1["kept_kernels"], conv1["density"], conv1["pruned"]) == (5, 12, 1.0, False)
    assert (conv1["presence_bytes"], conv1["alpha_bytes"], conv1["bias_bytes"], conv1["mask_bytes"]) == (0, 8, 6, 41)
    assert conv1["mask_alpha_bits"] == 12 * (27 + 5)
    assert conv1["actual_ratio"] == pytest.approx(12 * 36 / (8 + 41))
    assert conv1["paper_ratio"] == pytest.approx(288 / 35)  # the paper's formula, whatever the v2 settings
    assert (conv2["alpha_bits"], conv2["kept_kernels"], conv2["pruned"]) == (8, 19, True)
    assert conv2["density"] == pytest.approx(19 / 32)
    assert (conv2["presence_bytes"], conv2["alpha_bytes"], conv2["bias_bytes"], conv2["mask_bytes"]) == (4, 19, 12, 22)
    assert conv2["mask_alpha_bits"] == 19 * (9 + 8)
    assert conv2["actual_ratio"] == pytest.approx(32 * 36 / (4 + 19 + 22))
    assert (pool["kept_kernels"], pool["presence_bytes"], pool["density"]) == (0, 0, None)
    totals = summary["totals"]
    assert (totals["kernels"], totals["kept_kernels"], totals["pruned_layers"]) == (44, 31, 1)
    regions = [totals[key] for key in ("presence_bytes", "alpha_bytes", "bias_bytes", "mask_bytes")]
    assert regions == [4, 27, 18, 63]
    assert totals["overhead_bytes"] == 321 - 112  # 208 of header and table, one byte of padding
    assert totals["ratio"] == pytest.approx(44 * 36 / 321)


def test_region_bytes_are_the_layers_own(v2_model):
    """Every conv row's regions are `ConvLayer.region_sizes()`, the one home of the byte rules."""
    rows = [row for row in summarize(v2_model, 321, True)["layers"] if row["kind"] == "conv"]
    for row, conv in zip(rows, v2_model.conv_layers()):
        keys = ("presence_bytes", "alpha_bytes", "bias_bytes", "mask_bytes")
        assert tuple(row[key] for key in keys) == conv.region_sizes()


def test_hw_counts_only_present_kernels(v2_model):
    """conv1_1: 27,648 MACs, 2,765 cycles, 12*(27+5) + 4*12 = 432 weight bits, 55 B of ROM.
    conv2_1: 19 kernels * 9 * 8*8 = 10,944 MACs, ceil(/10) = 1,095 cycles (the kernel fetch skips
    the 13 pruned ones), 32 presence + 19*(9+8) + 8*12 = 451 weight bits, 4 + 19 + 12 + 22 = 57 B."""
    cost = hardware_cost(v2_model, HW)
    conv1, pool, conv2 = cost["layers"]
    assert (conv1["macs"], conv1["cycles"], conv1["weight_bits"], conv1["weight_rom_bytes"]) == (27_648, 2_765, 432, 55)
    assert (conv2["macs"], conv2["cycles"], conv2["weight_bits"], conv2["weight_rom_bytes"]) == (10_944, 1_095, 451, 57)
    assert (conv2["kept_kernels"], pool["kept_kernels"], pool["cycles"]) == (19, 0, 0)
    totals = cost["totals"]
    assert (totals["macs_per_frame"], totals["cycles_per_frame"]) == (38_592, 3_860)
    assert (totals["weight_rom_bits"], totals["weight_rom_bytes"]) == (883, 112)
    assert totals["nip"]["cycles"] == 4 * 3_860


def test_a_layer_with_no_kernel_costs_no_mac():
    model = random_model([2, 2], [4, 6], input_hw=(8, 8), seed=3, alpha_bits=1, keep=[1.0, 0.0])
    cost = hardware_cost(model, HW)
    assert cost["layers"][1]["macs"] == 0 and cost["layers"][1]["cycles"] == 0
    row = summarize(model, len(to_bytes(model)), True)["layers"][1]
    assert (row["kept_kernels"], row["density"], row["alpha_bytes"], row["mask_bytes"]) == (0, 0.0, 0, 0)
    assert row["presence_bytes"] == 3 and row["actual_ratio"] == pytest.approx(24 * 36 / 3)


def test_compress_summary_counts_what_the_blob_stores(v2_model, tmp_path):
    """`chipq compress`'s per-layer weight bytes are the stored regions (bitmap included), its ratio
    inspect's: not the paper's 9m + 8 bits for every kernel."""
    from chipq.quant.compress import CompressResult
    from chipq.quant.quantize import LayerReport
    from chipq.reports.compress import compress_summary

    reports = [LayerReport(conv.name, conv.mask_bits, conv.weight_shift, 0.1, 20.0) for conv in v2_model.conv_layers()]
    result = CompressResult(v2_model, reports, act_fracs=[4, 4], calib_count=2)
    summary = compress_summary(result, 321, tmp_path / "m.pt", tmp_path / "b.blob", "3a5,1k60")
    conv1, conv2 = summary["layers"]
    assert (conv1["alpha_bits"], conv1["kept_kernels"], conv1["presence_bytes"], conv1["mask_alpha_bytes"]) == (5, 12, 0, 49)
    assert (conv2["alpha_bits"], conv2["kept_kernels"], conv2["presence_bytes"], conv2["mask_alpha_bytes"]) == (8, 19, 4, 41)
    assert conv2["ratio"] == pytest.approx(32 * 36 / (4 + 19 + 22))
