"""bench/speed.py on a tiny VGG-16: every engine and setting runs; no timing is asserted."""

from __future__ import annotations

import numpy as np
import pytest
import speed


@pytest.fixture(scope="module")
def speed_result(tiny_bench, bench_work):
    return speed.run(tiny_bench.model, None, bench_work, tiny_bench.photos, tiny_bench.chip_hw, tiny_bench.large_hw,
                     repeats=2, pause=0.0)  # fmt: skip


def test_every_setting_times_every_engine(speed_result, tiny_bench):
    settings = {s["key"]: s for s in speed_result["settings"]}
    assert list(settings) == ["chip_1", "chip_nip4", "large_1", "rnip9"]
    assert [settings[k]["batch"] for k in settings] == [1, 4, 1, 9]
    assert settings["large_1"]["input_hw"] == list(tiny_bench.large_hw)
    assert "chipq_golden" in settings["chip_1"]["engines"]
    assert all("chipq_golden" not in s["engines"] for k, s in settings.items() if k != "chip_1")
    for setting in settings.values():
        engines = setting["engines"]
        assert setting["int8_reference"] in speed.INT8
        assert engines[setting["int8_reference"]]["ratio_to_int8"] == 1.0
        for name, data in engines.items():
            assert len(data["times_ms"]) == (1 if name == "chipq_golden" else 2)
            assert data["ms_per_image"] == pytest.approx(data["median_ms"] / setting["batch"])
        assert engines["torch_float"]["cosine_to_float"] == pytest.approx(1.0)
        assert engines["ort_float"]["cosine_to_float"] == pytest.approx(1.0, abs=1e-4)


def test_fast_equals_golden_and_report(speed_result):
    assert speed_result["settings"][0]["fast_equals_golden"] is True
    assert speed_result["threads"]["torch_intra_op"] == 2
    page = speed.render(speed_result)
    assert page.count("| onnxruntime int8 static, QDQ |") == 4
    assert "fast == golden on every element: yes" in page
    assert set(speed.headline(speed_result)) == {"chipq_fast", "ort_float", "torch_float", "int8_reference"}


def test_rnip9_setting_cuts_nine_crops(tiny_bench):
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    settings = speed.make_settings(img, tiny_bench.chip_hw, tiny_bench.large_hw)
    assert [s.pixels.shape for s in settings] == [(1, 3, 32, 32), (4, 3, 32, 32), (1, 3, 48, 64), (9, 3, 32, 32)]
    # the whole image is the first RNIP crop: its resize is the first input of the batch
    from chipq.images import resize

    assert np.array_equal(settings[3].pixels[0], resize(img, tiny_bench.chip_hw).transpose(2, 0, 1))


def test_cosine_is_per_image_mean():
    a = np.array([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    b = np.array([[[[1.0, 0.0]]], [[[1.0, -1.0]]]])
    assert speed.cosine(a, b) == pytest.approx(0.5)
