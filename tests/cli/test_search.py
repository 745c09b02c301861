"""`chipq index` and `chipq search`: the photo itself first, model checks, descriptor queries, --html."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chipq.cli import app

pytest.importorskip("faiss", reason="faiss is an optional part: pip install 'chipq[index]'")

runner = CliRunner()


@pytest.fixture(scope="module")
def indexed(tiny_vgg_files, tmp_path_factory):
    _, blob, photos = tiny_vgg_files
    root = tmp_path_factory.mktemp("search")
    desc = root / "s.npz"
    assert runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "-o", str(desc)]).exit_code == 0
    index = root / "idx"
    result = runner.invoke(app, ["index", str(desc), "-o", str(index), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metric"] == "cosine"
    return blob, photos, desc, index


def test_each_photo_finds_itself_first(indexed):
    blob, photos, _, index = indexed
    queries = sorted(photos.iterdir())
    result = runner.invoke(app, ["search", str(index), *map(str, queries), "--blob", str(blob), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [q["results"][0]["name"] for q in data["queries"]] == [p.name for p in queries]
    assert all(abs(q["results"][0]["score"] - 1.0) < 1e-5 for q in data["queries"])
    assert all(len(q["results"]) == 3 for q in data["queries"])


def test_descriptor_file_queries_and_html(indexed, tmp_path):
    blob, photos, desc, index = indexed
    page = tmp_path / "r.html"
    result = runner.invoke(app, ["search", str(index), str(desc), "-k", "2", "--html", str(page), "--images", str(photos), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [q["results"][0]["name"] for q in data["queries"]] == [q["query"] for q in data["queries"]]
    text = page.read_text(encoding="utf-8")
    assert text.count("data:image/jpeg;base64,") == 4 * 3  # 4 queries, each with its thumbnail and 2 hits
    assert "http://" not in text and "https://" not in text


def test_another_model_is_refused(indexed, tiny_vgg_files, tmp_path):
    blob, photos, _, index = indexed
    other = tmp_path / "other.blob"
    other.write_bytes(blob.read_bytes())
    other_bytes = bytearray(blob.read_bytes())
    result = runner.invoke(app, ["search", str(index), str(next(photos.iterdir())), "--blob", str(other)])
    assert result.exit_code == 0  # same bytes under another name: same model
    pt, _, _ = tiny_vgg_files
    result = runner.invoke(app, ["search", str(index), str(next(photos.iterdir())), "--model", str(pt)])
    assert result.exit_code != 0 and "not a model" in str(result.exception)  # the index came from a blob
    result = runner.invoke(app, ["search", str(index), str(next(photos.iterdir()))])
    assert result.exit_code != 0 and "--blob or --model" in str(result.exception)
    del other_bytes


def test_ivf_on_bits_and_bad_files_are_one_line_errors(indexed, tiny_vgg_files, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _, _, desc, _ = indexed
    _, blob, photos = tiny_vgg_files
    bits = tmp_path / "b.npz"
    assert runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "-d", "bit", "-o", str(bits)]).exit_code == 0
    chipq = Path(sys.executable).with_name("chipq")
    done = subprocess.run([str(chipq), "index", str(bits), "--method", "ivf", "-o", str(tmp_path / "i")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert not (tmp_path / "i").exists()
    (tmp_path / "junk").write_bytes(b"PK\x03\x04junk")
    done = subprocess.run([str(chipq), "search", str(tmp_path / "junk"), str(desc)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_top_k_image_root_and_ground_truth_marks(indexed, tmp_path):
    """`--top-k` is `-k`; `--image-root` names the thumbnails' folder (`--images` is its old name);
    `--gt` marks hits by the rule of `chipq eval` (exact name, else a file name only one image has)."""
    blob, photos, desc, index = indexed
    gt = tmp_path / "gt.json"
    gt.write_text('{"sub/img0.jpg": ["img1.jpg"]}', encoding="utf-8")
    page = tmp_path / "r.html"
    query = photos / "img0.jpg"
    args = ["search", str(index), str(query), "--blob", str(blob), "--top-k", "4", "--html", str(page), "--gt", str(gt), "--json"]
    result = runner.invoke(app, [*args, "--image-root", str(photos)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["k"] == 4 and len(data["queries"][0]["results"]) == 4
    text = page.read_text(encoding="utf-8")
    assert text.count("&#10003;</span> ") == 1  # img1.jpg, and only it
    result = runner.invoke(app, [*args, "--image-root", str(photos), "--images", str(photos)])
    assert result.exit_code != 0 and "--images is the old name of --image-root" in str(result.exception)
