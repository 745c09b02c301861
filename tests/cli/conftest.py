"""A tiny compressed VGG-11 and a few generated photos, shared by the CLI tests."""

from __future__ import annotations

import pytest
from helpers import save_tiny_vgg, write_photos

from chipq.formats.writer import write_blob
from chipq.importers import load_model
from chipq.quant.calibrate import calibration_batch
from chipq.quant.compress import compress


@pytest.fixture(scope="session")
def tiny_vgg_files(tmp_path_factory):
    """(model.pt, model.blob, photos folder) for a VGG-11 with channels / 16 at a 32x32 input."""
    root = tmp_path_factory.mktemp("tinyvgg")
    pt = save_tiny_vgg(root / "model.pt", "A")
    photos = root / "photos"
    write_photos(photos)
    stack = load_model(pt)
    plan = [3] * len(stack.conv_layers())
    blob = root / "model.blob"
    write_blob(compress(stack, plan, calibration_batch(photos, (32, 32)), (32, 32), reconstruction=None).model, blob)
    return pt, blob, photos
