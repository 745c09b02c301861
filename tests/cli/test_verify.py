"""`chipq verify` end to end on a tiny model: checks, JSON, exit codes, test vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from chipq.cli import app
from chipq.errors import UsageError

runner = CliRunner()


def test_verify_passes_and_reports_every_check(tiny_vgg_files):
    pt, blob, photos = tiny_vgg_files
    result = runner.invoke(app, ["verify", str(blob), "--model", str(pt), "--images", str(photos), "--golden", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["exact"] and data["ok"] and data["golden_images"] == 2
    assert set(data["accumulator"]) == {f"conv{b}" for b in ("1_1", "2_1", "3_1", "3_2", "4_1", "4_2", "5_1", "5_2")}
    assert all(0 < acc["peak"] <= acc["limit"] for acc in data["accumulator"].values())
    assert len(data["agreement"]) == 8
    assert -1 <= data["nip_cosine"]["mean"] <= 1


def test_min_cosine_failure_exits_1_with_the_reason(tiny_vgg_files):
    pt, blob, photos = tiny_vgg_files
    result = runner.invoke(app, ["verify", str(blob), "--model", str(pt), "--images", str(photos), "--golden", "0", "--min-cosine", "1.01"])
    assert result.exit_code == 1
    assert "--min-cosine" in str(result.exception)


def test_damaged_blob_is_refused(tiny_vgg_files, tmp_path):
    _, blob, photos = tiny_vgg_files
    bad = tmp_path / "bad.blob"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(bad), "--images", str(photos)])
    assert result.exit_code != 0 and "crc" in str(result.exception).lower()


def test_vectors_hold_each_layer_in_and_out(tiny_vgg_files, tmp_path):
    _, blob, photos = tiny_vgg_files
    out = tmp_path / "vectors"
    result = runner.invoke(app, ["verify", str(blob), "--images", str(photos), "--golden", "1", "--vectors", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    layers = manifest["images"][0]["layers"]
    first_in = np.load(out / layers[0]["input"], allow_pickle=False)
    assert first_in.dtype == np.int16 and first_in.shape == (3, 32, 32)
    for prev, cur in zip(layers, layers[1:]):  # each layer's input is the previous output
        assert np.array_equal(np.load(out / prev["output"]), np.load(out / cur["input"]))


def test_vectors_name_the_images_they_hold_when_a_file_is_skipped(tiny_vgg_files, tmp_path):
    """An undecodable file sorted first is skipped; the manifest must name the photos actually run."""
    _, blob, photos = tiny_vgg_files
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "000_broken.jpg").write_bytes(b"not a jpeg")
    good = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:2]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "vectors"
    result = runner.invoke(app, ["verify", str(blob), "--images", str(folder), "--golden", "2", "--vectors", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [image["name"] for image in manifest["images"]] == [path.name for path in good]


def test_report_names_the_fast_route(tiny_vgg_files):
    _, blob, photos = tiny_vgg_files
    result = runner.invoke(app, ["verify", str(blob), "--images", str(photos), "--golden", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["fast_route"].split()[0] in ("int8", "float")


def test_default_photos_are_the_sample_photos_not_the_calibration_set(tiny_vgg_files, monkeypatch):
    """Without --images, verify runs the 9 shipped sample photos (fidelity is never measured on
    the calibration photos); without an installed sample set it asks for --images in one line."""
    from chipq.data import samples_dir

    pt, blob, _ = tiny_vgg_files
    result = runner.invoke(app, ["verify", str(blob), "--golden", "0", "--limit", "20", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == len(list((samples_dir() / "photos").glob("*.jpg"))) == 9

    def missing():
        raise FileNotFoundError("no sample set")

    monkeypatch.setattr("chipq.data.samples_dir", missing)
    result = runner.invoke(app, ["verify", str(blob), "--golden", "0"])  # main() prints it in one line, exit 2
    assert isinstance(result.exception, UsageError) and "--images" in str(result.exception)


def test_vectors_are_swapped_in_whole_and_never_into_a_foreign_folder(tmp_path):
    from helpers import SAMPLE_BLOB

    from chipq.errors import UsageError
    from chipq.formats.reader import read_blob
    from chipq.pipeline.verify import write_vectors

    model = read_blob(SAMPLE_BLOB)
    images = np.zeros((1, 3, model.input_height, model.input_width), np.uint8)
    out = tmp_path / "vectors"
    write_vectors(model, images, ["a"], out)
    first = sorted(p.relative_to(out) for p in out.rglob("*"))
    write_vectors(model, images, ["a"], out)  # an earlier set is replaced whole
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == first
    assert [p.name for p in tmp_path.iterdir()] == ["vectors"]  # no staging folder left
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="holds other files"):
        write_vectors(model, images, ["a"], foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
