"""`chipq.pipeline`: one compress for every route, the verify workflow's default photos, the sample set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from floatcraft import random_stack
from PIL import Image

from chipq.data import default_photos_dir, samples_dir
from chipq.errors import UsageError
from chipq.formats.reader import read_blob
from chipq.formats.writer import to_bytes
from chipq.pipeline.compress import checkpoint_path, compress
from chipq.quant.compress import compress as post_training_step
from chipq.retrain.config import RetrainConfig
from chipq.retrain.pipeline import compress_retrained
from chipq.retrain.trainer import torch_settings


def tiny_stack():
    return random_stack([4, "M", 8, "M"], seed=0, bias_std=0.05)


def batch(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)


def test_post_training_route_is_the_quantization_step_and_writes_the_blob(tmp_path):
    out = tmp_path / "m.blob"
    stages = []
    made = compress(tiny_stack(), [3, 1], calib=batch(), input_hw=(16, 16), retrain=None, output=out,
                    status=lambda stage, done=None, total=None: stages.append(stage))  # fmt: skip
    want = post_training_step(tiny_stack(), [3, 1], batch(), (16, 16))
    assert to_bytes(made.model) == to_bytes(want.model) == out.read_bytes()
    assert made.plan == "3,1" and made.bits == [3, 1] and made.result.retrain is None
    assert stages[0] == "loading model" and stages[-1] == "writing blob"


def test_retraining_route_is_algorithm_1_and_removes_its_checkpoint(tmp_path):
    images = [np.random.default_rng(i).integers(0, 256, (24, 20, 3), dtype=np.uint8) for i in range(2)]
    config = RetrainConfig(steps=2, batch=2, crop=32, samples=4, seed=1)
    out = tmp_path / "r.blob"
    made = compress(tiny_stack(), "3,1", calib=batch(), train_images=images, input_hw=(16, 16), retrain=config, output=out)
    with torch_settings(config.threads):
        want = compress_retrained(tiny_stack(), [3, 1], batch(), images, config, input_hw=(16, 16))
    assert out.read_bytes() == to_bytes(want.model) and made.result.retrain["steps"] == 2
    assert not checkpoint_path(out).exists()


def test_refusals_come_before_any_work(tmp_path):
    with pytest.raises(UsageError, match="--plan auto needs --budget"):
        compress(tiny_stack(), "auto", calib=batch(), retrain=None)
    with pytest.raises(UsageError, match="--plan PLAN or --budget B, not both"):
        compress(tiny_stack(), [3, 1], budget="1MB", calib=batch(), retrain=None)
    with pytest.raises(UsageError, match="--resume is a retraining setting"):
        compress(tiny_stack(), [3, 1], calib=batch(), retrain=None, output=tmp_path / "x.blob", resume=True)
    with pytest.raises(UsageError, match="no checkpoint"):
        compress(tiny_stack(), [3, 1], calib=batch(), output=tmp_path / "x.blob", resume=True)


def test_model_file_route_reads_the_photos(tmp_path):
    from chipq.importers.torchvision_layout import vgg_cfg
    from chipq.importers.torchvision_vgg import VGG

    torch.manual_seed(0)
    model = tmp_path / "vgg11.pt"
    torch.save(VGG(vgg_cfg("A", 16)).state_dict(), model)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    made = compress(model, "3x4,1x4", images=photos, input_hw=(32, 32), retrain=None, output=tmp_path / "v.blob")
    assert made.result.calib_count == 2 and [c.mask_bits for c in read_blob(tmp_path / "v.blob").conv_layers()] == [3] * 4 + [1] * 4


def test_sample_set_ships_and_is_not_the_calibration_set():
    """verify's default photos: the 9 sample photos, none of them a calibration / training photo."""
    from chipq.pipeline.verify import default_photos

    root = samples_dir()
    photos = sorted(p.name for p in default_photos().glob("*.jpg"))
    assert default_photos() == root / "photos" and len(photos) == 9
    assert len(list((root / "queries").glob("*.jpg"))) == 54 and json.loads((root / "groundtruth.json").read_text())
    calibration = {p.read_bytes() for p in default_photos_dir().glob("*.jpg")}
    assert not any((root / "photos" / name).read_bytes() in calibration for name in photos)


def test_sensitivity_kind_names_are_the_sensitivity_modules():
    from chipq.quant import sensitivity
    from chipq.reports.planner import SensitivityKind

    assert SensitivityKind.weight_only.value == sensitivity.WEIGHT_ONLY
