"""`chipq.quant.compress`: post-training compression and its retraining variant, in memory."""

from __future__ import annotations

import numpy as np
import pytest
from floatcraft import random_stack
from PIL import Image

from chipq.floatnet.model import FloatStack
from chipq.formats.writer import to_bytes
from chipq.images import EmptyCalibration
from chipq.quant.calibrate import calibration_batch
from chipq.quant.compress import calibrate, compress
from chipq.quant.quantize import quantize_stack
from chipq.retrain.config import RetrainConfig
from chipq.retrain.pipeline import compress_retrained
from chipq.retrain.trainer import torch_settings


def tiny_stack(seed: int = 0) -> FloatStack:
    return random_stack([4, "M", 8, "M"], seed=seed, bias_std=0.05)


def batch(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)


def test_compress_is_quantize_stack_with_calibrated_shifts():
    stack, calib = tiny_stack(), batch()
    result = compress(stack, [3, 1], calib, (16, 16), reconstruction=None)  # weight-only
    fracs = calibrate(stack, calib)
    assert result.act_fracs == fracs and len(fracs) == 2 and result.calib_count == 3
    want, _ = quantize_stack(stack, [3, 1], fracs, (16, 16))
    assert to_bytes(result.model) == to_bytes(want)
    assert result.retrain is None
    assert [layer.name for layer in result.model.layers] == ["conv1_1", "pool1", "conv2_1"]  # trailing pool dropped


def test_compress_reports_stages_and_repeats_bytes():
    seen = []
    first = compress(tiny_stack(), [2, 2], batch(), (16, 16), step=seen.append)
    assert seen == ["reconstructing conv1_1", "reconstructing conv2_1", "quantizing weights"]  # it calibrates too
    assert to_bytes(compress(tiny_stack(), [2, 2], batch(), (16, 16)).model) == to_bytes(first.model)


def test_calibration_batch_resizes_skips_bad_files_and_refuses_an_empty_folder(tmp_path):
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    got = calibration_batch(tmp_path, (16, 16))
    assert got.shape == (1, 3, 16, 16) and got.dtype == np.uint8 and (got == 7).all()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyCalibration, match="no decodable"):
        calibration_batch(empty)


def test_compress_retrained_summary_and_resume_needs_a_checkpoint():
    images = [np.random.default_rng(i).integers(0, 256, (24, 20, 3), dtype=np.uint8) for i in range(2)]
    config = RetrainConfig(steps=2, batch=2, crop=32, samples=4, seed=1)
    with torch_settings(config.threads):
        result = compress_retrained(tiny_stack(), [3, 1], batch(), images, config, input_hw=(16, 16))
    summary = result.retrain
    assert summary["steps"] == 2 and summary["images"] == 2 and summary["trained_layers"] == ["conv2_1"]
    assert summary["resumed_at_step"] == 0 and 0 <= summary["final_cosine"] <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="checkpoint"):
        compress_retrained(tiny_stack(), [3, 1], batch(), images, config, input_hw=(16, 16), resume=True)
