"""`chipq verify --vectors OUT --vectors-hex`: every vector also as a `$readmemh` file."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from chipq.cli import app
from chipq.errors import UsageError
from chipq.export.memimage import read_hex

runner = CliRunner()


def test_hex_vectors_hold_the_npy_elements_in_c_order(tiny_vgg_files, tmp_path):
    _, blob, photos = tiny_vgg_files
    out = tmp_path / "vectors"
    args = ["verify", str(blob), "--images", str(photos), "--golden", "1", "--vectors", str(out), "--vectors-hex"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    image = json.loads((out / "manifest.json").read_text())["images"][0]
    pixels = np.load(out / image["pixels"])
    assert read_hex(out / image["pixels_hex"], 8).tolist() == pixels.reshape(-1).tolist()
    for number, row in enumerate(image["layers"]):
        for key in ("input", "output"):
            array = np.load(out / row[key])
            width = 16 if array.dtype == np.int16 else 8
            assert (number == 0 and key == "input") == (width == 16)  # only x0 = p - mean is signed
            words = read_hex(out / row[f"{key}_hex"], width).astype(np.int64)
            signed = np.where(words >= 1 << (width - 1), words - (1 << width), words) if width == 16 else words
            assert signed.tolist() == array.reshape(-1).astype(np.int64).tolist(), row[f"{key}_hex"]
    assert (out / image["layers"][0]["input_hex"]).read_text().count("\n") == 1 + 3 * 32 * 32


def test_vectors_hex_needs_vectors(tiny_vgg_files):
    _, blob, photos = tiny_vgg_files
    result = runner.invoke(app, ["verify", str(blob), "--images", str(photos), "--vectors-hex"])
    assert isinstance(result.exception, UsageError) and "needs --vectors" in str(result.exception)
