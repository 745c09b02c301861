"""bench/evalset.py: committed evaluation photos, their licences, disjointness, queries and ground truth."""

from __future__ import annotations

import hashlib
import io
import json
import re

import evalset
import numpy as np
import pytest
from PIL import Image

ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*`([0-9a-f]{64})`\s*\|\s*$")
ALLOWED = {"Public domain", "CC0 1.0", "CC BY 1.0", "CC BY 2.0", "CC BY 2.5", "CC BY 3.0", "CC BY 4.0",
           "CC BY-SA 2.0", "CC BY-SA 2.5", "CC BY-SA 3.0", "CC BY-SA 4.0"}


def test_every_eval_photo_has_one_licence_row_with_its_sha256():
    folder = evalset.EVAL_PHOTOS
    rows = [m.groups() for m in map(ROW.match, (folder / "LICENSES.md").read_text().splitlines()) if m]
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    assert set(names) == {p.name for p in folder.glob("*.jpg")}
    for name, _source, licence, _credit, digest in rows:
        assert licence.strip() in ALLOWED, (name, licence)
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert sum(p.stat().st_size for p in folder.glob("*.jpg")) <= 6_000_000


def test_eval_photos_are_disjoint_from_the_training_set():
    report = evalset.check_disjoint(None)
    assert report["evaluation_images"] >= 40 and report["training_images"] >= 100
    assert report["max_thumbnail_correlation"] < evalset.NEAR_DUPLICATE


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue()))


def test_the_perceptual_check_catches_edited_copies_of_a_training_photo(tmp_path, monkeypatch):
    """A re-encoded, shrunk, turned or window-cropped training photo put in the eval set is refused."""
    train = sorted(evalset.default_photos_dir().glob("gcompris-monuments-*.jpg"))[0]
    image = evalset._load(train)
    w, h = image.size
    copies = {
        "jpeg.jpg": _jpeg(image, 20),
        "small.jpg": image.resize((w // 3, h // 3)),
        "turned.jpg": image.transpose(Image.Transpose.ROTATE_90),
        "centre.jpg": image.crop((w // 5, h // 5, w - w // 5, h - h // 5)),
    }
    for name, copy in copies.items():
        folder = tmp_path / name
        folder.mkdir()
        copy.convert("RGB").save(folder / name, quality=90)
        monkeypatch.setattr(evalset, "EVAL_PHOTOS", folder)
        with pytest.raises(SystemExit, match="near-duplicate"):
            evalset.check_disjoint(None)
    folder = tmp_path / "same"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(train.read_bytes())
    monkeypatch.setattr(evalset, "EVAL_PHOTOS", folder)
    with pytest.raises(SystemExit, match="same SHA-256"):
        evalset.check_disjoint(None)


def test_build_writes_queries_and_ground_truth_deterministically(tmp_path, monkeypatch):
    photos = tmp_path / "src"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(320, 240), (200, 300)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photos / f"p{i}.jpg")
    (photos / "LICENSES.md").write_text("test\n")
    monkeypatch.setattr(evalset, "EVAL_PHOTOS", photos)
    ukbench = tmp_path / "uk"
    (ukbench / "jpg").mkdir(parents=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(ukbench / "jpg" / f"u{i}.jpg")
    (ukbench / "groundtruth.json").write_text(json.dumps(
        {"groups": {"0": [f"u{i}.jpg" for i in range(4)], "1": [f"u{i}.jpg" for i in range(4, 8)]}}))
    summary = evalset.build(tmp_path / "a", ukbench)
    gt = json.loads((tmp_path / "a" / "groundtruth.json").read_text())
    assert summary["queries"] == len(gt) == 2 * len(evalset.EDITS) + 8 + 8
    assert gt["queries/p0_crop25.jpg"] == ["photos/p0.jpg"]
    assert gt["ukbench/u0.jpg"] == ["ukbench/u1.jpg", "ukbench/u2.jpg", "ukbench/u3.jpg"]
    assert len(gt["queries/ukbench_u5_strong.jpg"]) == 4
    for query, relevant in gt.items():
        assert (tmp_path / "a" / query).is_file()
        assert all((tmp_path / "a" / r).is_file() for r in relevant)
    with Image.open(tmp_path / "a" / "queries" / "p0_crop25.jpg") as crop:
        assert crop.size == (160, 120)  # a quarter of the area
    with Image.open(tmp_path / "a" / "queries" / "p1_rot90.jpg") as turned:
        assert turned.size == (300, 200)
    with Image.open(tmp_path / "a" / "queries" / "p0_down5.jpg") as small:
        assert small.size == (64, 48)
    evalset.build(tmp_path / "b", ukbench)
    for path in sorted((tmp_path / "a").rglob("*.jpg")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path


def _npz(path, names, descriptors):
    np.savez(path, format_version=np.array(1), kind=np.array("float"), dim=np.array(descriptors.shape[1]),
             names=np.array(names), descriptors=descriptors.astype(np.float32),
             metadata=np.array(json.dumps({"model": "test"})))


def test_score_reports_map_per_edit_and_cosine_to_float(tmp_path):
    rng = np.random.default_rng(1)
    names = ["photos/a.jpg", "photos/b.jpg", "queries/a_crop25.jpg", "queries/b_crop25.jpg",
             "queries/a_jpeg10.jpg", "queries/b_jpeg10.jpg"]
    base = rng.normal(size=(2, 16))
    ref = np.concatenate([base, base + 0.1 * rng.normal(size=(2, 16)), base[::-1]])  # jpeg10: swapped
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    gt = {q: [f"photos/{q.split('/')[1].split('_')[0]}.jpg"] for q in names[2:]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    _npz(tmp_path / "f.npz", names, ref)
    _npz(tmp_path / "c.npz", names, -ref)
    result = evalset.score(tmp_path / "gt.json", tmp_path / "f.npz", {"chip": tmp_path / "c.npz"})
    float_row, chip = result["models"]["float"], result["models"]["chip"]
    assert float_row["map_by_edit"] == {"crop25": 1.0, "jpeg10": 0.25}  # Holidays rule: rank 2 -> 0.25
    assert float_row["map"] == 0.625 and float_row["queries"] == 4
    assert chip["mean_cosine_to_float"] == -1.0 and chip["map_gap_to_float"] == round(chip["map"] - 0.625, 4)
