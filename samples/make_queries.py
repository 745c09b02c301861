"""Make the Copydays-style query set for chipq's sample retrieval demo.

Every photo ``photos/<stem>.jpg`` gets six edited copies, written as
``queries/<stem>_<edit>.jpg``:

========  ============================================================  =======
edit      what is done                                                   quality
========  ============================================================  =======
crop      crop keeping 70 % of the area (same aspect, seeded offset)     75
rot10     rotate 10 degrees, cut to the largest inscribed rectangle      75
rot90     rotate 90 degrees counter-clockwise (exact, no resampling)     75
jpeg15    no change but a strong re-encode                               15
half      scale to 0.5x                                                  75
mix       crop 60 % of the area, scale 0.8x, darken and flatten          40
========  ============================================================  =======

Naming convention (this is the contract with ``groundtruth.json``): an item's
name is its path relative to the ``samples/`` folder, with forward slashes,
e.g. ``photos/coffee.jpg`` and ``queries/coffee_crop.jpg``. A descriptor file
made over ``samples/`` recursively therefore uses the same names as the ground
truth.

``groundtruth.json`` is the generic ``{query_name: [relevant_name, ...]}``
mapping: each query's only relevant item is the photo it was made from. The
database of a retrieval run is the originals (``photos/``); the other queries
are not database items.

Determinism: the only randomness (crop offsets) comes from a generator seeded
with ``SEED`` and the photo's stem, so adding a photo leaves the other photos'
queries alone. Pillow's JPEG encoder gives the same bytes for the same pixels
and parameters, so a rerun with the same Pillow reproduces every file byte for
byte. Metadata (ICC, EXIF) is not copied into the queries. Files in the
``queries/`` folder that this run did not make are removed, so the folder
always matches ``groundtruth.json``.

Usage::

    python samples/make_queries.py                    # writes into samples/
    python samples/make_queries.py --out /tmp/check   # writes elsewhere
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from chipq.formats.fileio import atomic_write, atomic_write_text
from chipq.pipeline.demo_set import rotate_inscribed  # the demo set turns its queries the same way

SEED = 20240505
QUERY_QUALITY = 75
PHOTOS_DIR = "photos"
QUERIES_DIR = "queries"
GROUNDTRUTH_FILE = "groundtruth.json"

Edit = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, int]]


def crop_box(
    size: tuple[int, int], fraction: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """Place a window with ``fraction`` of the area and the frame's aspect ratio.

    Args:
        size: Frame (width, height).
        fraction: Kept area, in (0, 1].
        rng: Generator that places the window.

    Returns:
        The window as a Pillow box (left, top, right, bottom), inside the frame.
    """
    side = math.sqrt(fraction)
    w, h = size
    cw, ch = round(w * side), round(h * side)
    # rng.random() draws doubles, whose stream numpy keeps stable across versions.
    left = int(rng.random() * (w - cw + 1))
    top = int(rng.random() * (h - ch + 1))
    return left, top, left + cw, top + ch


def crop_area(img: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """Cut the window that ``crop_box`` places."""
    return img.crop(crop_box(img.size, fraction, rng))


def scale(img: Image.Image, factor: float) -> Image.Image:
    """Resize by ``factor`` with Lanczos filtering."""
    w, h = img.size
    return img.resize((round(w * factor), round(h * factor)), Image.Resampling.LANCZOS)


def darken(img: Image.Image, gain: float, offset: float) -> Image.Image:
    """Map every pixel value v to ``gain * v + offset``, clipped to 0..255."""
    pixels = np.asarray(img, dtype=np.float64) * gain + offset
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def edit_crop(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Copydays-style crop: 70 % of the area."""
    return crop_area(img, 0.70, rng), QUERY_QUALITY


def edit_rot10(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """A small tilt, which NIP's 90-degree rotations do not cover."""
    return rotate_inscribed(img, 10.0), QUERY_QUALITY


def edit_rot90(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """A quarter turn, which NIP's max over rotations is meant to absorb."""
    return img.transpose(Image.Transpose.ROTATE_90), QUERY_QUALITY


def edit_jpeg15(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Copydays-style strong JPEG: same pixels, quality 15."""
    return img, 15


def edit_half(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Half the resolution."""
    return scale(img, 0.5), QUERY_QUALITY


def edit_mix(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Several edits at once, like a re-shared copy: crop, shrink, darken, JPEG 40."""
    return darken(scale(crop_area(img, 0.60, rng), 0.8), 0.8, -10.0), 40


# Order matters: the crop edits draw from the photo's generator in this order.
EDITS: dict[str, Edit] = {
    "crop": edit_crop,
    "rot10": edit_rot10,
    "rot90": edit_rot90,
    "jpeg15": edit_jpeg15,
    "half": edit_half,
    "mix": edit_mix,
}


def load_photo(path: Path) -> Image.Image:
    """Decode a photo to plain RGB or L pixels, dropping its metadata."""
    with Image.open(path) as img:
        img = img.convert("L" if img.mode == "L" else "RGB")
        return Image.fromarray(np.asarray(img))


def make_queries(stem: str, photo: Image.Image) -> dict[str, tuple[Image.Image, int]]:
    """Apply every edit to one photo.

    Args:
        stem: Photo file name without extension; seeds the crop offsets.
        photo: Decoded photo.

    Returns:
        Query file name -> (edited image, JPEG quality).
    """
    rng = np.random.default_rng([SEED, zlib.crc32(stem.encode("utf-8"))])
    return {f"{stem}_{name}.jpg": edit(photo, rng) for name, edit in EDITS.items()}


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    """Encode with fixed, explicit settings so reruns give the same bytes."""
    with tempfile.SpooledTemporaryFile() as buf:
        img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
        buf.seek(0)
        return buf.read()


def build(photos_dir: Path, out_dir: Path) -> dict[str, list[str]]:
    """Write ``out_dir/queries/*.jpg`` and ``out_dir/groundtruth.json``.

    Args:
        photos_dir: Folder of ``*.jpg`` originals.
        out_dir: Root that receives ``queries/`` and ``groundtruth.json``.

    Returns:
        The ground truth that was written.

    Raises:
        FileNotFoundError: ``photos_dir`` holds no ``*.jpg``.
    """
    photos = sorted(photos_dir.glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no *.jpg photos in {photos_dir}")
    queries_dir = out_dir / QUERIES_DIR
    queries_dir.mkdir(parents=True, exist_ok=True)
    groundtruth: dict[str, list[str]] = {}
    for path in photos:
        for name, (img, quality) in make_queries(path.stem, load_photo(path)).items():
            atomic_write(queries_dir / name, jpeg_bytes(img, quality), what="query photo")
            groundtruth[f"{QUERIES_DIR}/{name}"] = [f"{PHOTOS_DIR}/{path.name}"]
    made = {name.split("/", 1)[1] for name in groundtruth}
    for stale in queries_dir.glob("*.jpg"):
        if stale.name not in made:
            stale.unlink()
    text = json.dumps(groundtruth, indent=2, sort_keys=True) + "\n"
    atomic_write_text(out_dir / GROUNDTRUTH_FILE, text, what="ground truth")
    return groundtruth


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and build the query set."""
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--photos", type=Path, default=here / PHOTOS_DIR, help="folder of the original photos"
    )
    parser.add_argument(
        "--out", type=Path, default=here, help="root that receives queries/ and groundtruth.json"
    )
    args = parser.parse_args(argv)
    groundtruth = build(args.photos, args.out)
    print(f"wrote {len(groundtruth)} queries to {args.out / QUERIES_DIR}")


if __name__ == "__main__":
    main()
