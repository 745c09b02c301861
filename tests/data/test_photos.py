"""The photo set shipped in the package (chipq.data): licences, hashes, sizes, and that installs carry it."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, SAMPLES
from PIL import Image

from chipq.data import default_photos_dir

PHOTOS = REPO / "compressor" / "data" / "photos"
ALLOWED_LICENCES = {
    "Public domain", "CC0 1.0",
    "CC BY 1.0", "CC BY 2.0", "CC BY 2.5", "CC BY 3.0", "CC BY 4.0",
    "CC BY-SA 2.0", "CC BY-SA 2.5", "CC BY-SA 3.0", "CC BY-SA 4.0",
}
# One table row of LICENSES.md: | `file.jpg` | source | licence | credit | `sha256` |
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*`([0-9a-f]{64})`\s*\|\s*$")
MAX_SIDE = 640
MAX_TOTAL_BYTES = 8_000_000


def _rows() -> list[tuple[str, str, str, str, str]]:
    lines = (PHOTOS / "LICENSES.md").read_text(encoding="utf-8").splitlines()
    return [tuple(part.strip() for part in m.groups()) for m in map(ROW.match, lines) if m]


def _photos() -> list[Path]:
    return sorted(PHOTOS.glob("*.jpg"))


def test_default_photos_dir_is_the_shipped_folder():
    assert default_photos_dir().resolve() == PHOTOS.resolve()


def test_every_photo_has_exactly_one_row_with_its_sha256():
    rows = _rows()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), "LICENSES.md lists a file twice"
    files = {p.name for p in _photos()}
    assert set(names) == files, (sorted(files - set(names)), sorted(set(names) - files))
    for name, source, licence, credit, digest in rows:
        assert hashlib.sha256((PHOTOS / name).read_bytes()).hexdigest() == digest, name
        assert licence in ALLOWED_LICENCES, (name, licence)
        assert source and credit, name


def test_no_other_files_in_the_folder():
    # Only the photos and their table are package data; a stray file would ship unrecorded.
    others = [p.name for p in PHOTOS.iterdir() if p.suffix != ".jpg" and p.name != "LICENSES.md"]
    assert others == []


def test_set_size_and_image_budget():
    photos = _photos()
    assert 60 <= len(photos) <= 160, len(photos)
    assert sum(p.stat().st_size for p in photos) <= MAX_TOTAL_BYTES
    digests = set()
    for path in photos:
        with Image.open(path) as image:
            assert image.format == "JPEG", path.name
            assert max(image.size) <= MAX_SIDE, (path.name, image.size)
            assert min(image.size) >= 100, (path.name, image.size)
            assert image.mode in ("RGB", "L"), (path.name, image.mode)
            image.load()
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == len(photos), "two photos are the same file"


def test_processed_files_carry_no_metadata():
    for path in _photos():
        if path.name.startswith("gcompris-"):
            with Image.open(path) as image:
                assert "exif" not in image.info and "icc_profile" not in image.info, path.name


def test_a_built_wheel_carries_every_photo(tmp_path):
    """Build the wheel from a copy of the sources (not the work tree) and look inside it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in ("compressor", "formats", "samples"):  # samples/ ships as chipq.samples
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(dist)],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = dist.glob("chipq-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n.rsplit("/", 1)[1]: archive.read(n) for n in archive.namelist()
                   if n.startswith("chipq/data/photos/")}
        assert "chipq/data/__init__.py" in archive.namelist()
        names = archive.namelist()
        assert "chipq/samples/groundtruth.json" in names  # verify's default photos and the demo's set
        assert len([n for n in names if n.startswith("chipq/samples/photos/") and n.endswith(".jpg")]) == 9
        assert len([n for n in names if n.startswith("chipq/samples/queries/")]) == 54
    expected = {p.name: p.read_bytes() for p in _photos()}
    expected["LICENSES.md"] = (PHOTOS / "LICENSES.md").read_bytes()
    assert shipped == expected


def test_samples_stay_out_of_the_training_set():
    """The demo scores retrieval on samples/: none of its photos may be a training/calibration photo."""
    import hashlib

    from chipq.data import default_photos_dir

    shipped = {hashlib.sha256(p.read_bytes()).hexdigest() for p in default_photos_dir().glob("*.jpg")}
    stems = {p.stem.split("-", 1)[-1] for p in default_photos_dir().glob("*.jpg")}
    for photo in sorted((SAMPLES / "photos").glob("*.jpg")):
        assert hashlib.sha256(photo.read_bytes()).hexdigest() not in shipped, photo.name
        assert photo.stem not in stems, photo.name
