"""`chipq extract` resumes a checkpoint only for the same run: the resume-identity rule.

A checkpoint (OUT.partial.npz) is resumed only when the blob or model (by content), the images
(names and contents) and every setting are the run's own; anything else is refused with a message
naming what differs, and nothing is written. The checkpoints here are made by copying a finished
descriptor file of a run to its partial name: a complete, valid checkpoint of that run.
"""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from chipq.cli import app
from chipq.formats.reader import read_blob
from chipq.formats.writer import write_blob
from chipq.retrieval.descriptors import PartialMismatch, partial_path

runner = CliRunner()


@pytest.fixture
def run_folder(tiny_vgg_files, tmp_path):
    """(blob, photos, out) copies in tmp_path, with a finished run's file as the checkpoint of `out`."""
    _, blob, photos = tiny_vgg_files
    shutil.copy(blob, tmp_path / "model.blob")
    shutil.copytree(photos, tmp_path / "photos")
    first = tmp_path / "first.npz"
    assert extract(tmp_path, first).exit_code == 0
    out = tmp_path / "out.npz"
    shutil.copy(first, partial_path(out))
    return tmp_path, first, out


def extract(folder, out, *extra):
    args = ["extract", str(folder / "photos"), "--blob", str(folder / "model.blob"), "-o", str(out), "--json", *extra]
    return runner.invoke(app, args)


def test_the_same_run_resumes_and_gives_the_same_bytes(run_folder):
    folder, first, out = run_folder
    result = extract(folder, out)
    assert result.exit_code == 0, result.output
    assert '"resumed": 4' in result.stdout
    assert out.read_bytes() == first.read_bytes() and not partial_path(out).exists()


def refused(result, *words):
    assert isinstance(result.exception, PartialMismatch), result.output
    message = str(result.exception)
    assert all(word in message for word in words), message


def test_another_blob_of_the_same_name_is_not_resumed(run_folder):
    folder, _, out = run_folder
    chip = read_blob(folder / "model.blob")
    conv = chip.conv_layers()[-1]
    bias = conv.bias.copy()
    bias[0] = bias[0] + 1 if bias[0] < 2047 else bias[0] - 1
    from dataclasses import replace

    layers = tuple(replace(layer, bias=bias) if layer is conv else layer for layer in chip.layers)
    write_blob(replace(chip, layers=layers), folder / "model.blob")  # same name, other content
    refused(extract(folder, out), "blob_sha256")
    assert not out.exists()


def test_a_changed_image_is_not_resumed(run_folder):
    folder, _, out = run_folder
    photo = folder / "photos" / "img2.jpg"
    data = bytearray(photo.read_bytes())
    data[-3] ^= 0xFF  # inside the entropy-coded data, before the EOI marker
    photo.write_bytes(bytes(data))
    refused(extract(folder, out), "images_sha256")
    assert not out.exists()


def test_a_renamed_image_set_is_not_resumed(run_folder):
    folder, _, out = run_folder
    (folder / "photos" / "img3.jpg").rename(folder / "photos" / "img9.jpg")
    refused(extract(folder, out), "images_sha256")


@pytest.mark.parametrize(
    "extra, word",
    [(["--rnip", "5"], "rnip"), (["-d", "byte"], "descriptor kind"), (["--input", "64x32"], "size")],
)
def test_other_settings_are_not_resumed(run_folder, extra, word):
    folder, _, out = run_folder
    refused(extract(folder, out, *extra), word)
    assert not out.exists()


def test_the_old_size_option_still_works_and_clashes_with_input(tiny_vgg_files, tmp_path):
    _, blob, photos = tiny_vgg_files
    ok = runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "--size", "32x32", "-o", str(tmp_path / "a.npz")])
    assert ok.exit_code == 0, ok.output
    both = runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "--size", "32x32", "--input", "32x32", "-o", str(tmp_path / "b.npz")])
    assert "old name of --input" in str(both.exception)
