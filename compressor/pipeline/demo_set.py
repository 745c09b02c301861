"""The demo's retrieval set, made on the fly from the sample photos shipped with chipq.

Why not the sample set itself (`samples/queries`): its 54 mild edits against 9 very different photos
are found by every model (mAP 1.0000 for float, post-training and retrained alike), so the demo
showed no difference. This set is harder in the two ways that separate the models:

- **Database**: each of the 9 sample photos cut into a `GRID` x `GRID` grid of tiles that do not
  overlap (36 items). Every tile has 3 near neighbours, the other tiles of the same photo (same
  colours, light and texture), so a query is ranked against hard distractors.
- **Queries**: both `EDITS` applied to every tile (72 queries), each much stronger than Copydays':
  half the tile tilted 20 degrees with a warm colour cast; a crop at another aspect, tilted, shrunk,
  dulled and saved at JPEG quality 20. A query's one relevant item is the tile it was made from.
  These two separated float from post-training on a first draw of the crops (a blurred small crop
  and a perspective view with an occluder did not); on other draws the 32-bit mAP gap between the
  models is small and may change sign (72 queries; the "strong" copies are often beyond any model),
  while the 1-bit mAP and the descriptor cosine differ more steadily. Two edits, not more, keep the
  demo short on 2 cores (each image is described by three models).

Honest evaluation: the sources are `chipq.data.samples_dir() / "photos"`, none of which is a
calibration or training photo of `chipq compress` (`chipq.data.default_photos_dir()`), so nothing
the demo's blobs were made from is searched for or searched in.

Deterministic: the only randomness (crop places and aspects) comes from generators seeded with
`SEED`, the tile's name and the edit, and the JPEG settings
are fixed, so the same Pillow writes the same bytes on every run (the descriptor files of a resumed
demo stay valid). Names: an item's path relative to the set's folder, ``database/<photo>_r<row>c<col>.jpg`` and
``queries/<photo>_r<row>c<col>_<edit>.jpg``, the form ``chipq eval --gt`` reads.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from chipq.formats.fileio import atomic_write, atomic_write_text

DEMO_SET_DIR = "retrieval"  # the set's folder inside the demo's work folder
SEED = 20261206
GRID = 2  # tiles per side of each photo
TILE_QUALITY = 90  # the database tiles: a clean copy, like an original
DATABASE_DIR = "database"
QUERIES_DIR = "queries"
GROUNDTRUTH_FILE = "groundtruth.json"

Edit = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, int]]


@dataclass(frozen=True)
class DemoSet:
    """A made set: its folder (``database/``, ``queries/``) and ground truth file."""

    images: Path
    groundtruth: Path
    database: int
    queries: int


def load_rgb(path: Path) -> Image.Image:
    """A photo as plain RGB pixels (greyscale photos too, so colour edits apply), no metadata."""
    with Image.open(path) as img:
        return Image.fromarray(np.asarray(img.convert("RGB")))


def tiles(photo: Image.Image, grid: int = GRID) -> dict[str, Image.Image]:
    """The photo cut into grid x grid tiles that do not overlap: ``r<row>c<col>`` -> tile."""
    w, h = photo.size
    xs = [round(w * i / grid) for i in range(grid + 1)]
    ys = [round(h * i / grid) for i in range(grid + 1)]
    return {
        f"r{r}c{c}": photo.crop((xs[c], ys[r], xs[c + 1], ys[r + 1]))
        for r in range(grid)
        for c in range(grid)
    }


def crop_area(img: Image.Image, fraction: float, aspect: float, rng: np.random.Generator) -> Image.Image:
    """A window with `fraction` of the area, its aspect `aspect` times the image's, placed by `rng`."""
    w, h = img.size
    cw = min(w, round(w * math.sqrt(fraction * aspect)))
    ch = min(h, round(h * math.sqrt(fraction / aspect)))
    left, top = int(rng.random() * (w - cw + 1)), int(rng.random() * (h - ch + 1))
    return img.crop((left, top, left + cw, top + ch))


def rotate_inscribed(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate and keep the largest centred rectangle of the same aspect with no fill."""
    w, h = img.size
    rad = math.radians(degrees)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    scale = min(w / (w * cos + h * sin), h / (w * sin + h * cos))
    turned = img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)
    cw, ch = math.floor(w * scale), math.floor(h * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    return turned.crop((left, top, left + cw, top + ch))


def resize(img: Image.Image, factor: float) -> Image.Image:
    """Scale by `factor` (Lanczos), never below 16 px a side."""
    w, h = img.size
    return img.resize((max(16, round(w * factor)), max(16, round(h * factor))), Image.Resampling.LANCZOS)


def colour(img: Image.Image, gains: tuple[float, float, float], contrast: float = 1.0, offset: float = 0.0) -> Image.Image:
    """Per-channel gains around mid-grey with a contrast factor: v' = contrast*(gain*v - 128) + 128 + offset."""
    pixels = np.asarray(img, dtype=np.float64) * np.asarray(gains)
    pixels = contrast * (pixels - 128.0) + 128.0 + offset
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def edit_tilt(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Half the tile, tilted 20 degrees (NIP's quarter turns do not cover it) with a warm cast."""
    part = crop_area(img, 0.5, 1.0, rng)
    return colour(rotate_inscribed(part, 20.0), (1.25, 1.0, 0.7)), 50


def edit_strong(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """All at once, like a copy shared many times: crop at another aspect, tilt, shrink, dull, JPEG 20."""
    part = crop_area(img, 0.5, 0.7 if rng.random() < 0.5 else 1.4, rng)
    return colour(resize(rotate_inscribed(part, 12.0), 0.5), (0.85, 0.85, 0.85), contrast=0.6, offset=-15.0), 20


# Each edit's generator is seeded with its place here: append new edits at the end.
EDITS: dict[str, Edit] = {"tilt": edit_tilt, "strong": edit_strong}


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    """Encode with fixed, explicit settings so reruns give the same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False, subsampling=2)
    return buf.getvalue()


def tile_queries(name: str, tile: Image.Image) -> dict[str, tuple[Image.Image, int]]:
    """Every edit of one tile: query file name -> (image, JPEG quality)."""
    seed = zlib.crc32(name.encode("utf-8"))
    # one generator per (tile, edit): an edit's result does not depend on which other edits the tile got
    return {f"{name}_{edit}.jpg": fn(tile, np.random.default_rng([SEED, seed, i])) for i, (edit, fn) in enumerate(EDITS.items())}


LICENCE_NOTE = """# Licences of this retrieval set

Made by `chipq demo` (`chipq.pipeline.demo_set`) from the sample photos shipped with chipq. Every
file in `database/` and `queries/` is a modified version (cut into tiles; cropped, rotated, rescaled,
colour-shifted and re-encoded) of the photo its name starts with, under that photo's licence below;
the photos made from `china.jpg` and `flower.jpg` are licensed under CC BY 2.0
(https://creativecommons.org/licenses/by/2.0/) with the credit given below.

"""


def build_demo_set(photos: list[Path], out: Path, licences: Path | None = None) -> DemoSet:
    """Write the set into `out` (``database/``, ``queries/``, ``groundtruth.json``) from `photos`,
    and ``LICENSES.md``: `LICENCE_NOTE` followed by the photos' own licence file `licences`.

    A file already holding the right bytes is left alone; files of another set in those two
    folders are removed, so the folder always matches the ground truth.
    """
    planned: dict[str, bytes] = {}
    truth: dict[str, list[str]] = {}
    for path in sorted(photos):
        for cell, tile in tiles(load_rgb(path)).items():
            name = f"{path.stem}_{cell}"
            item = f"{DATABASE_DIR}/{name}.jpg"
            planned[item] = jpeg_bytes(tile, TILE_QUALITY)
            for query, (img, quality) in tile_queries(name, tile).items():
                planned[f"{QUERIES_DIR}/{query}"] = jpeg_bytes(img, quality)
                truth[f"{QUERIES_DIR}/{query}"] = [item]
    for folder in (DATABASE_DIR, QUERIES_DIR):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for stale in (out / folder).iterdir():
            if f"{folder}/{stale.name}" not in planned and stale.is_file():
                stale.unlink()
    for name, data in planned.items():
        target = out / name
        if not (target.is_file() and target.read_bytes() == data):
            atomic_write(target, data, what="demo image")
    if licences is not None:
        _write_if_changed(out / "LICENSES.md", LICENCE_NOTE + licences.read_text(encoding="utf-8"), "licence file")
    gt_path = out / GROUNDTRUTH_FILE
    _write_if_changed(gt_path, json.dumps(truth, indent=2, sort_keys=True) + "\n", "ground truth")
    return DemoSet(out, gt_path, database=len(planned) - len(truth), queries=len(truth))


def _write_if_changed(path: Path, text: str, what: str) -> None:
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        atomic_write_text(path, text, what=what)
