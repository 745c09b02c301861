"""The public API of `chipq/__init__`: every name resolves, and the documented flow runs end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from floatcraft import random_stack
from PIL import Image

import chipq


def test_every_public_name_resolves():
    for name in chipq.__all__:
        assert getattr(chipq, name) is not None, name


def test_import_chipq_does_not_load_torch():
    code = "import sys, chipq; chipq.parse_plan; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_documented_flow_runs(tmp_path):
    """The module docstring's example, on a tiny model: compress, write, read, run, describe."""
    stack = random_stack([4, "M", 8], seed=2)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    calib = chipq.calibration_batch(tmp_path, size=(16, 16))
    plan = chipq.parse_plan("3x1,1x1", [conv.name for conv in stack.conv_layers()])
    model = chipq.compress(stack, plan, calib, input_hw=(16, 16)).model
    chipq.write_blob(model, tmp_path / "m.blob")
    again = chipq.read_blob(tmp_path / "m.blob")
    assert chipq.to_bytes(again) == chipq.to_bytes(model)
    maps = chipq.FastExecutor(again).run(calib)
    np.testing.assert_array_equal(maps, chipq.GoldenExecutor(again).run(calib))
    vector = chipq.describe(chipq.load_image(tmp_path / "p0.png"), chipq.chip_features(again), size=(16, 16))
    assert vector.shape == (8,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
