"""`chipq extract` on a tiny model: descriptors, kinds, skip-and-count, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from chipq.cli import app, main
from chipq.retrieval.descriptors import load_descriptors

runner = CliRunner()


@pytest.mark.parametrize("kind, width, dtype", [("float", 32, np.float32), ("byte", 32, np.uint8), ("bit", 4, np.uint8)])
def test_blob_descriptors_of_each_kind(tiny_vgg_files, tmp_path, kind, width, dtype):
    _, blob, photos = tiny_vgg_files
    out = tmp_path / "d.npz"
    result = runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "-d", kind, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    dset = load_descriptors(out)
    assert dset.names == [f"img{i}.jpg" for i in range(4)]
    assert dset.codes.shape == (4, width) and dset.codes.dtype == dtype


def test_float_model_and_chip_descriptors_are_comparable(tiny_vgg_files, tmp_path):
    pt, blob, photos = tiny_vgg_files
    for source, name in (("--blob", blob), ("--model", pt)):
        out = tmp_path / f"{source[2:]}.npz"
        result = runner.invoke(app, ["extract", str(photos), source, str(name), "--input", "32x32", "--rnip", "5", "-o", str(out)])
        assert result.exit_code == 0, result.output
    chip, ref = load_descriptors(tmp_path / "blob.npz"), load_descriptors(tmp_path / "model.npz")
    norms = np.linalg.norm(chip.codes, axis=1)
    assert np.allclose(norms[norms > 0], 1, atol=1e-5)
    assert float((chip.codes * ref.codes).sum(axis=1).mean()) > 0.5


def test_undecodable_image_is_skipped_and_counted(tiny_vgg_files, tmp_path):
    _, blob, photos = tiny_vgg_files
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in photos.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8not a jpeg")
    out = tmp_path / "d.npz"
    result = runner.invoke(app, ["extract", str(folder), "--blob", str(blob), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["skipped"] == 1 and summary["described"] == 4
    assert "broken.jpg" not in load_descriptors(out).names


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rnip", "7"], "'7' is not one of '5', '9', '14'"),
        (["-d", "half"], "'half' is not one of 'float', 'byte', 'bit'"),
        (["--batch", "0"], "--batch"),
    ],
)
def test_bad_options_are_usage_errors_checked_by_the_parser(tiny_vgg_files, tmp_path, monkeypatch, capsys, args, message):
    _, blob, photos = tiny_vgg_files
    argv = ["chipq", "extract", str(photos), "--blob", str(blob), "-o", str(tmp_path / "d.npz"), *args]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "d.npz").exists()


def test_descriptor_kind_ignores_case_and_size_is_the_old_input(tiny_vgg_files, tmp_path):
    _, blob, photos = tiny_vgg_files
    out = tmp_path / "d.npz"
    result = runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "-d", "BIT", "--size", "32x32", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["descriptor"] == "bit" and summary["input"] == "32x32"
    result = runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "--size", "32x32", "--input", "32x32", "-o", str(out)])
    assert "--size is the old name of --input" in str(result.exception)


def test_blob_and_model_are_exclusive(tiny_vgg_files, tmp_path):
    pt, blob, photos = tiny_vgg_files
    result = runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "--model", str(pt), "-o", str(tmp_path / "d.npz")])
    assert "exactly one" in str(result.exception)


def test_real_process_bad_rnip_is_one_line_exit_2(tiny_vgg_files, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _, blob, photos = tiny_vgg_files
    chipq = Path(sys.executable).with_name("chipq")
    proc = subprocess.run(
        [str(chipq), "extract", str(photos), "--blob", str(blob), "--rnip", "7", "-o", str(tmp_path / "d.npz")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
