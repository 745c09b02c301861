"""The whole chip path on the real VGG-16 and real photos (slow: about a minute; CI runs it)."""

from __future__ import annotations

import numpy as np
import pytest

from chipq.executor import golden
from chipq.executor.fast import FastExecutor
from chipq.formats.reader import from_bytes
from chipq.formats.writer import to_bytes
from chipq.importers import load_model
from chipq.pipeline.verify import verify
from chipq.quant.calibrate import calibration_batch, default_calib_dir
from chipq.quant.compress import compress
from chipq.reports.inspect import summarize

pytestmark = pytest.mark.slow

PLAN = [3] * 7 + [1] * 6  # 3x7,1x6
FP32_BYTES = 58_841_856
MASK_ALPHA_BYTES = 31_255_104 // 8


@pytest.fixture(scope="module")
def compressed(real_vgg16, real_vgg16_blob):
    pt_path, onnx_path = real_vgg16
    calib = calibration_batch(default_calib_dir())
    stack = load_model(pt_path)
    # weight-only (reconstruction=None), as `real_vgg16_blob` (the .pt's) is made: the exactness and
    # size checks do not need the minutes the reconstruction takes; tests/quant/test_reconstruct.py
    # covers that path
    onnx_blob = to_bytes(compress(load_model(onnx_path), PLAN, calib, reconstruction=None).model)
    return stack, real_vgg16_blob, onnx_blob, calib


def test_pt_and_onnx_give_the_same_blob_of_about_3_91_mb(compressed):
    _, blob, onnx_blob, _ = compressed
    assert blob == onnx_blob
    summary = summarize(from_bytes(blob), len(blob), crc_ok=True)
    assert summary["totals"]["mask_alpha_bits"] == 31_255_104
    assert len(blob) <= 1.005 * (MASK_ALPHA_BYTES + 4224 * 12 // 8)
    assert FP32_BYTES / len(blob) >= 15.0


def test_fast_equals_golden_on_a_real_photo_every_layer(compressed):
    _, blob, _, calib = compressed
    model = from_bytes(blob)
    fast = FastExecutor(model).run(calib[:2], taps=True)
    gold = golden.run(model, calib[1], taps=True)
    assert len(gold) == len(model.layers) == 17
    for layer, f, g in zip(model.layers, fast, gold):
        assert np.array_equal(f[1], g), layer.name
    assert gold[-1].shape == (512, 14, 14) and gold[-1].any()


def test_verify_reports_fidelity_to_the_float_model(compressed):
    stack, blob, _, calib = compressed
    report = verify(from_bytes(blob), calib[:2], ["a", "b"], stack=stack, golden_count=0)
    assert not report.failures
    by_name = {row.name: row for row in report.agreement}
    assert by_name["conv1_2"].cosine > 0.95  # 3-bit layers stay close
    # post-training 3x7,1x6: README/bench report a mean NIP cosine of about 0.7 (0.71 measured here
    # on these two photos); a broken quantizer or pooling gives far less (random weights: ~0.3)
    assert 0.6 <= np.mean(report.nip_cosines) < 0.999
    assert min(report.nip_cosines) > 0.5
    deep = [row.cosine for row in report.agreement if row.name.startswith("conv5")]
    assert min(deep) < by_name["conv1_2"].cosine  # the 1-bit layers lose more than the 3-bit ones
