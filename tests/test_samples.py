"""Checks on the committed sample photos, their licences and the generated query set."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

PHOTOS = SAMPLES / "photos"
QUERIES = SAMPLES / "queries"
GROUNDTRUTH = SAMPLES / "groundtruth.json"
ALLOWED_LICENCES = {"CC0 1.0", "Public domain", "CC BY 2.0"}
# One table row of LICENSES.md: | `file.jpg` | source | licence | credit | `sha256` |
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*`([0-9a-f]{64})`\s*\|\s*$")


def _load_make_queries():
    """Import samples/make_queries.py, which is a script, not part of the package."""
    spec = importlib.util.spec_from_file_location("make_queries", SAMPLES / "make_queries.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_queries = _load_make_queries()


def _photos() -> list[Path]:
    return sorted(PHOTOS.glob("*.jpg"))


def _licence_rows() -> dict[str, tuple[str, str]]:
    """File name -> (licence, sha256) from the LICENSES.md table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in (PHOTOS / "LICENSES.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            name, _source, licence, _credit, digest = match.groups()
            assert name not in rows, f"LICENSES.md lists {name} twice"
            rows[name] = (licence.strip(), digest)
    return rows


def test_photo_count_and_size_budget():
    photos = _photos()
    assert 8 <= len(photos) <= 12, [p.name for p in photos]
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 3_500_000, f"samples/ holds {total} bytes"


@pytest.mark.parametrize("path", _photos(), ids=lambda p: p.name)
def test_photo_decodes_at_real_size(path):
    with Image.open(path) as img:
        assert img.format == "JPEG"
        assert img.mode in {"RGB", "L"}, img.mode
        assert min(img.size) >= 256, img.size
        img.load()


def test_licences_cover_exactly_the_photos():
    rows = _licence_rows()
    assert sorted(rows) == [p.name for p in _photos()]
    for name, (licence, digest) in rows.items():
        assert licence in ALLOWED_LICENCES, f"{name}: licence {licence!r}"
        actual = hashlib.sha256((PHOTOS / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name}: sha256 {actual}, LICENSES.md says {digest}"


def test_groundtruth_names_existing_files():
    groundtruth = json.loads(GROUNDTRUTH.read_text(encoding="utf-8"))
    photo_names = {f"photos/{p.name}" for p in _photos()}
    query_names = {f"queries/{p.name}" for p in QUERIES.glob("*.jpg")}
    assert set(groundtruth) == query_names
    assert len(groundtruth) == len(photo_names) * len(make_queries.EDITS)
    for query, relevant in groundtruth.items():
        assert relevant and set(relevant) <= photo_names, (query, relevant)
        # The convention: photos/<stem>.jpg -> queries/<stem>_<edit>.jpg.
        stem = relevant[0].removeprefix("photos/").removesuffix(".jpg")
        assert query.removeprefix("queries/").rsplit("_", 1)[0] == stem, query
    assert {r for rel in groundtruth.values() for r in rel} == photo_names


@pytest.mark.parametrize("path", sorted(QUERIES.glob("*.jpg")), ids=lambda p: p.name)
def test_query_decodes(path):
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.mode in {"RGB", "L"}
        img.load()


def test_rerun_reproduces_identical_bytes(tmp_path):
    """The committed queries and ground truth are exactly what the script makes today."""
    make_queries.build(PHOTOS, tmp_path)
    made = sorted(p.name for p in (tmp_path / "queries").iterdir())
    assert made == sorted(p.name for p in QUERIES.iterdir())
    for name in made:
        fresh = (tmp_path / "queries" / name).read_bytes()
        assert fresh == (QUERIES / name).read_bytes(), (
            f"queries/{name} differs from a fresh run (Pillow {Image.__version__}); "
            "rerun samples/make_queries.py if the edits changed on purpose"
        )
    assert (tmp_path / "groundtruth.json").read_bytes() == GROUNDTRUTH.read_bytes()


def test_rerun_removes_stale_queries(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "coffee.jpg").write_bytes((PHOTOS / "coffee.jpg").read_bytes())
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "gone_crop.jpg").write_bytes(b"old")
    groundtruth = make_queries.build(photos, tmp_path)
    assert sorted(groundtruth) == sorted(f"queries/coffee_{e}.jpg" for e in make_queries.EDITS)
    assert not (tmp_path / "queries" / "gone_crop.jpg").exists()


def test_build_refuses_empty_photo_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.jpg photos"):
        make_queries.build(tmp_path, tmp_path)


@settings(max_examples=25, deadline=None)
@given(
    w=st.integers(64, 400),
    h=st.integers(64, 400),
    degrees=st.floats(1.0, 30.0),
    mode=st.sampled_from(["L", "RGB"]),
)
def test_rotate_inscribed_leaves_no_fill(w, h, degrees, mode):
    """Property: the kept rectangle lies inside the rotated photo, so no fill pixel survives,
    and both sides shrink by the same factor, up to flooring each to whole pixels."""
    white = Image.new(mode, (w, h), "white")
    out = make_queries.rotate_inscribed(white, degrees)
    assert np.asarray(out).min() == 255
    ow, oh = out.size
    assert abs(ow / w - oh / h) <= max(1 / w, 1 / h), (w, h, out.size)


@settings(max_examples=25, deadline=None)
@given(
    w=st.integers(16, 800),
    h=st.integers(16, 800),
    fraction=st.floats(0.3, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_crop_box_keeps_fraction_inside_frame(w, h, fraction, seed):
    """Property: the window lies inside the frame and each side is sqrt(fraction) of the frame's,
    rounded, so the area is the requested share up to rounding."""
    left, top, right, bottom = make_queries.crop_box((w, h), fraction, np.random.default_rng(seed))
    assert 0 <= left < right <= w and 0 <= top < bottom <= h
    side = fraction**0.5
    assert (right - left, bottom - top) == (round(w * side), round(h * side))
