"""bench/size.py on a tiny VGG-16, and the paper's formula on the real VGG-16's shapes."""

from __future__ import annotations

import common as cm
import pytest
import size

from chipq.importers.torchvision_layout import VGG_CFGS


def vgg16_kernels() -> list[int]:
    """out x in of every VGG-16 conv, from the configuration alone."""
    kernels, in_ch = [], 3
    for value in VGG_CFGS["D"]:
        if value != "M":
            kernels.append(int(value) * in_ch)
            in_ch = int(value)
    return kernels


def test_paper_formula_on_vgg16_shapes_gives_the_design_numbers():
    """3x7,1x6: 58.84 MB -> 3.91 MB, 15.06x (DESIGN.md); fp32 bytes are the constant in common."""
    kernels = vgg16_kernels()
    assert sum(kernels) * 9 * 4 == cm.VGG16_FP32_BYTES
    bits = [3] * 7 + [1] * 6
    formula = size.paper_bytes(list(zip(kernels, bits)))
    assert formula == 3_906_888
    assert cm.VGG16_FP32_BYTES / formula == pytest.approx(15.06, abs=0.005)
    assert size.paper_bytes([(1, 1)]) * 8 == 17  # one kernel: 9 mask bits + 8 alpha bits


def test_size_run_measures_each_plan(tiny_bench, bench_work):
    result = size.run(tiny_bench.model, ("1x13", cm.MAIN_PLAN), bench_work, tiny_bench.photos, tiny_bench.chip_hw)
    rows = result["plans"]
    assert [row["plan"] for row in rows] == ["1x13", cm.MAIN_PLAN]
    for row in rows:
        assert row["ratio"] == pytest.approx(row["fp32_weight_bytes"] / row["blob_bytes"])
        # the file holds at least what the formula counts: masks and alphas, plus biases and header
        assert row["blob_bytes"] > row["paper_mask_alpha_bytes"]
    assert rows[0]["blob_bytes"] < rows[1]["blob_bytes"]  # 1-bit masks everywhere are smaller
    assert rows[1]["mask_bits"] == [3] * 7 + [1] * 6
    assert rows[1]["paper_layer_ratios"] == {"3": pytest.approx(288 / 35), "1": pytest.approx(288 / 17)}
    page = size.render(result)
    assert "`3x7,1x6`" in page and "8.23x (3-bit)" in page
