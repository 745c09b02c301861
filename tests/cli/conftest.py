"""A tiny compressed VGG-11 and a few generated photos, shared by the CLI tests."""

from __future__ import annotations

import pytest
import torch
from helpers import write_photos

from chipq.formats.writer import write_blob
from chipq.importers import load_model
from chipq.importers.torchvision_layout import vgg_cfg
from chipq.importers.torchvision_vgg import VGG
from chipq.quant.compress import calibration_batch, compress


@pytest.fixture(scope="session")
def tiny_vgg_files(tmp_path_factory):
    """(model.pt, model.blob, photos folder) for a VGG-11 with channels / 16 at a 32x32 input."""
    root = tmp_path_factory.mktemp("tinyvgg")
    torch.manual_seed(0)
    net = VGG(vgg_cfg("A", 16), batch_norm=False)
    pt = root / "model.pt"
    torch.save(net.state_dict(), pt)
    photos = root / "photos"
    write_photos(photos)
    stack = load_model(pt)
    plan = [3] * len(stack.conv_layers())
    blob = root / "model.blob"
    write_blob(compress(stack, plan, calibration_batch(photos, (32, 32)), (32, 32), reconstruction=None).model, blob)
    return pt, blob, photos
