"""The demo's retrieval set (`chipq.pipeline.demo_set`): made from the sample photos only, every query
with one relevant tile, the same bytes on every run, and hard edits (not re-encodes)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import SAMPLES
from PIL import Image

from chipq.data import default_photos_dir
from chipq.pipeline import demo_set
from chipq.pipeline.demo_set import EDITS, GRID, build_demo_set, tiles

TWO_PHOTOS = [SAMPLES / "photos" / "coffee.jpg", SAMPLES / "photos" / "camera.jpg"]  # one RGB, one greyscale


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("set")
    return build_demo_set(TWO_PHOTOS, out, licences=SAMPLES / "photos" / "LICENSES.md")


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_query_has_one_relevant_tile_of_its_own_photo(made):
    truth = json.loads(made.groundtruth.read_text(encoding="utf-8"))
    database = sorted(p.relative_to(made.images).as_posix() for p in (made.images / "database").iterdir())
    queries = sorted(p.relative_to(made.images).as_posix() for p in (made.images / "queries").iterdir())
    assert (made.database, made.queries) == (len(TWO_PHOTOS) * GRID**2, len(TWO_PHOTOS) * GRID**2 * len(EDITS))
    assert sorted(truth) == queries and len(database) == made.database
    for query, relevant in truth.items():
        assert len(relevant) == 1 and relevant[0] in database, query
        # queries/<photo>_r<row>c<col>_<edit>.jpg -> database/<photo>_r<row>c<col>.jpg
        assert query.removeprefix("queries/").rsplit("_", 1)[0] == relevant[0].removeprefix("database/").removesuffix(".jpg")
    assert {r for rel in truth.values() for r in rel} == set(database)  # every tile is searched for


def test_the_set_carries_the_licences_of_its_photos(made):
    text = (made.images / "LICENSES.md").read_text(encoding="utf-8")
    assert "modified version" in text and "CC BY 2.0" in text
    assert text.endswith((SAMPLES / "photos" / "LICENSES.md").read_text(encoding="utf-8"))


def test_the_set_is_the_same_bytes_on_every_run(made, tmp_path):
    again = build_demo_set(list(reversed(TWO_PHOTOS)), tmp_path, licences=SAMPLES / "photos" / "LICENSES.md")  # any order
    assert _digests(again.images) == _digests(made.images)


def test_a_rerun_keeps_good_files_and_drops_foreign_ones(tmp_path):
    first = build_demo_set(TWO_PHOTOS[:1], tmp_path)
    kept = {p: p.stat().st_mtime_ns for p in first.images.rglob("*.jpg")}
    (tmp_path / "queries" / "other_r0c0_blur.jpg").write_bytes(b"from another set")
    build_demo_set(TWO_PHOTOS[:1], tmp_path)
    assert {p: p.stat().st_mtime_ns for p in first.images.rglob("*.jpg")} == kept  # nothing rewritten
    assert not (tmp_path / "queries" / "other_r0c0_blur.jpg").exists()


def test_tiles_cover_the_photo_without_overlap():
    with Image.open(TWO_PHOTOS[0]) as img:
        photo = img.convert("RGB")
    cut = tiles(photo)
    assert len(cut) == GRID**2
    assert sum(t.size[0] * t.size[1] for t in cut.values()) == photo.size[0] * photo.size[1]
    rows = [np.concatenate([np.asarray(cut[f"r{r}c{c}"]) for c in range(GRID)], axis=1) for r in range(GRID)]
    assert np.array_equal(np.concatenate(rows, axis=0), np.asarray(photo))


def test_every_edit_changes_the_pixels_not_only_the_encoding(made):
    """A query is a hard edit of its tile (crop, tilt, shrink, colour), never the tile re-encoded."""
    truth = json.loads(made.groundtruth.read_text(encoding="utf-8"))
    for query, (tile,) in truth.items():
        with Image.open(made.images / query) as q, Image.open(made.images / tile) as t:
            if q.size == t.size:
                diff = np.abs(np.asarray(q.convert("RGB"), dtype=np.int16) - np.asarray(t.convert("RGB"), dtype=np.int16))
                assert diff.mean() > 8, query


def test_the_sources_are_not_training_or_calibration_photos():
    """Honest scores: the demo's blobs are calibrated and retrained on `default_photos_dir()`; the
    retrieval set is made from samples/photos, which shares no file and no photo name with it."""
    training = {hashlib.sha256(p.read_bytes()).hexdigest() for p in default_photos_dir().glob("*.jpg")}
    sources = sorted((SAMPLES / "photos").glob("*.jpg"))
    assert sources and all(hashlib.sha256(p.read_bytes()).hexdigest() not in training for p in sources)
    assert not {p.stem for p in sources} & {p.stem.split("-")[-1] for p in default_photos_dir().glob("*.jpg")}


def test_the_demo_makes_its_set_from_the_sample_photos_only(tmp_path, monkeypatch):
    """`run_demo` builds the set from samples/photos (and nothing else) before any download."""
    from chipq.pipeline import demo

    seen = []

    def stop_at_fetch(*args, **kwargs):
        raise RuntimeError("fetch reached")

    monkeypatch.setattr(demo, "build_demo_set", lambda photos, out, licences: seen.append((photos, out)) or build_demo_set(TWO_PHOTOS[:1], out, licences))
    monkeypatch.setattr("chipq.importers.fetch.fetch_vgg16", stop_at_fetch)
    with pytest.raises(RuntimeError, match="fetch reached"):
        demo.run_demo(tmp_path / "wd")
    ((photos, out),) = seen
    assert sorted(photos) == sorted((SAMPLES / "photos").glob("*.jpg")) and out == tmp_path / "wd" / demo_set.DEMO_SET_DIR
    assert (out / "groundtruth.json").is_file() and (out / "LICENSES.md").is_file()


@pytest.mark.parametrize("given", [["--images", "photos"], ["--gt", "gt.json"]])
def test_images_and_gt_go_together(tmp_path, monkeypatch, given):
    from chipq.pipeline.demo import run_demo
    from chipq.reports.demo import DemoInputError

    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "photos" / "a.jpg")
    (tmp_path / "gt.json").write_text(json.dumps({"photos/a.jpg": ["photos/a.jpg"]}))
    option, value = given
    kwargs = {"images": tmp_path / value} if option == "--images" else {"gt": tmp_path / value}
    with pytest.raises(DemoInputError, match="--images" if option == "--gt" else "--gt"):
        run_demo(tmp_path / "wd", **kwargs)
    assert not (tmp_path / "wd").exists()  # refused before anything is written


@pytest.mark.parametrize("folder", ["samples", "calibration"])
def test_the_work_folder_may_not_lie_inside_a_photo_folder_the_demo_reads(tmp_path, monkeypatch, folder):
    """Writing the set or the blobs there would add files to what the next run reads: refused,
    naming the folder, before anything is made."""
    from chipq.data import samples_dir
    from chipq.formats.fileio import FileRefused
    from chipq.pipeline import demo
    from chipq.quant.calibrate import default_calib_dir

    source = samples_dir() / "photos" if folder == "samples" else default_calib_dir()
    workdir = source / "demo-out"
    with pytest.raises(FileRefused, match="lies inside the"):
        demo.run_demo(workdir)
    assert not workdir.exists()
