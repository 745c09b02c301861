"""`chipq verify` on chip format v2 blobs: integrity, fast == golden, and the float checks."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from typer.testing import CliRunner

from chipq.cli import app
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.reader import read_blob
from chipq.formats.synthetic import random_model
from chipq.formats.writer import write_blob

runner = CliRunner()


def pruned(layer: ConvLayer, keep: float, alpha_bits: int) -> ConvLayer:
    """`layer` with its smallest-alpha kernels dropped to a `keep` share and alphas cut to `alpha_bits`."""
    count = int(round(keep * layer.alpha.size))
    order = np.argsort(layer.alpha.ravel(), kind="stable")[::-1]
    present = np.zeros(layer.alpha.size, bool)
    present[order[:count]] = True
    present = present.reshape(layer.alpha.shape)
    step = C.alpha_step(alpha_bits)
    alpha = np.where(present, layer.alpha // step * step, 0).astype(np.uint8)
    mask = np.where(present[:, :, None, None], layer.mask, 0).astype(np.uint8)
    return replace(layer, alpha=alpha, mask=mask, alpha_bits=alpha_bits, present=present)


def test_verify_a_random_v2_blob(tmp_path, tiny_vgg_files):
    """Integrity and fast == golden on every layer of two photos, per-layer alpha widths and keeps
    (one conv keeps no kernel)."""
    _, _, photos = tiny_vgg_files
    model = random_model([3, 1, 2], [8, "M", 12, 6], input_hw=(16, 16), seed=5, alpha_bits=[5, 1, 8], keep=[0.5, None, 0.0])
    blob = tmp_path / "v2.blob"
    write_blob(model, blob)
    result = runner.invoke(app, ["verify", str(blob), "--images", str(photos), "--golden", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["exact"] and data["ok"] and data["golden_images"] == 2
    kernels = [conv.out_channels * conv.in_channels for conv in model.conv_layers()]
    assert data["format_version"] == 2 and data["kernels"] == sum(kernels)
    assert data["kept_kernels"] == sum(conv.kept_kernels() for conv in model.conv_layers()) < sum(kernels)
    text = runner.invoke(app, ["verify", str(blob), "--images", str(photos), "--golden", "1"]).stdout
    assert f"chip format v2, {data['kept_kernels']:,} of {sum(kernels):,} kernels stored" in text


def test_verify_a_pruned_compressed_model_against_its_float_model(tmp_path, tiny_vgg_files):
    """The tiny VGG's blob with every conv pruned to 60 % of its kernels at 6-bit alphas: still exact
    and the float checks run (the cosine is whatever pruning without refitting leaves)."""
    pt, blob, photos = tiny_vgg_files
    chip = read_blob(blob)
    layers = tuple(pruned(layer, 0.6, 6) if isinstance(layer, ConvLayer) else layer for layer in chip.layers)
    v2 = tmp_path / "pruned.blob"
    write_blob(ChipModel(chip.input_height, chip.input_width, chip.channel_order, chip.input_mean, layers), v2)
    assert read_blob(v2).format_version() == 2
    args = ["verify", str(v2), "--model", str(pt), "--images", str(photos), "--golden", "1", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["exact"] and data["ok"] and len(data["agreement"]) == len(chip.conv_layers())
    assert -1 <= data["nip_cosine"]["mean"] <= 1


def test_verify_refuses_a_damaged_v2_blob_in_one_line(tmp_path, tiny_vgg_files):
    _, _, photos = tiny_vgg_files
    model = random_model([2, 2], [6, 4], input_hw=(8, 8), seed=1, alpha_bits=3, keep=0.5)
    blob = tmp_path / "v2.blob"
    write_blob(model, blob)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01  # inside the last conv's masks (bit 0: a code bit, not padding)
    blob.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(blob), "--images", str(photos)])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "layer conv1_2: payload CRC32" in message and "\n" not in message
