"""The retrieval evaluation set: real photos disjoint from every training and calibration image.

Three steps (subcommands):

``photos``  (re)build the committed database photos ``bench/evalset/photos/`` and their
            ``LICENSES.md`` from pinned Debian packages (fetched with ``apt-get download``,
            unpacked with ``dpkg-deb -x``, nothing installed). Same processing as the training set
            (``compressor/data/make_photos.py``: longer side <= 640 px, JPEG quality 90, no
            metadata). Sources, all other files than the training set's:

            * GCompris ``gcompris-qt-data`` 3.1-2: the 28 fish photos of the "categorization"
              activity (a fine-grained group: every fish is a distractor for the others) and the
              licensed photos of "explore_world_animals"; licence per file from its DEP-5
              copyright file (the training set takes other folders of the same package);
            * LXQt ``lxqt-themes`` 1.2.0-1: the 11 photographic wallpapers of
              ``/usr/share/lxqt/wallpapers`` (CC BY-SA 3.0, by that folder's ``License`` file);
            * KDE Palapeli ``palapeli-data`` 4:22.12.3-1: the 3 public-domain puzzle photos (licence
              and author from each puzzle's ``.desktop`` file).

``build``   write an evaluation folder OUT: ``photos/`` (the database), ``queries/`` (Copydays-style
            edited copies of every database photo), optionally ``ukbench/`` (UKBench-56, 14 objects
            x 4 real views: real same-scene pairs, given with ``--ukbench DIR``; not committed, the
            UKBench images carry no licence), ``groundtruth.json`` (``{query: [relevant, ...]}``,
            names relative to OUT, the form ``chipq eval --gt`` reads) and ``README.md``. It runs
            the disjointness check first and refuses to build when it fails.

``check``   the disjointness check alone: no database image of the evaluation set (committed photos
            and UKBench) may be a training/calibration image (``chipq.data`` photos, ``samples/``),
            by SHA-256 nor by a perceptual test: the Pearson correlation of 32x32 high-pass
            greyscale thumbnails (the evaluation image whole, under 4 rotations, against the
            training image whole and 27 windows of 80/60/50 % of its sides) must stay below
            `NEAR_DUPLICATE`. Measured: re-encodes, resizes, rotations and window-aligned crops of
            a training photo score >= 0.94, unrelated photos <= 0.51; crops far from the window
            grid are not caught (provenance keeps them apart: other files, other folders or
            packages). It also reports the closest pair.

The edits (per database photo; `EDITS` below; deterministic: the only randomness comes from a
generator seeded with `SEED` and the photo's name, and Pillow encodes the same pixels to the same
bytes):

==========  =====================================================================  =======
edit        what is done                                                           quality
==========  =====================================================================  =======
crop25      crop to a quarter of the area (half width, half height), seeded place  85
jpeg10      re-encode only                                                         10
down5       shrink 5x (Pillow's antialiasing bilinear)                             85
rot90       rotate 90 degrees (exact)                                              85
aspect      stretch one side 1.6x or squash it to 0.6x (seeded)                    85
strong      crop half the area at a seeded aspect (0.7x or 1.4x), rotate 270,      20
            shrink 2x, contrast 0.7x, brightness 0.8x
crop25b     a second quarter-area crop, from another seeded corner                 85
==========  =====================================================================  =======

With ``--ukbench`` each UKBench image is also a query whose relevant items are the 3 other views of
its object (real viewpoint changes), and its ``strong`` edit is a query whose relevant items are
all 4 views.

Evaluate (NIP at 224x224)::

    python bench/evalset.py build --out /tmp/evalset --ukbench ../shared/data/ukbench56
    chipq extract /tmp/evalset --model vgg16.pt -o float.npz
    chipq eval float.npz --gt /tmp/evalset/groundtruth.json --exclude-queries
    chipq extract /tmp/evalset --blob b.blob -o chip.npz
    python bench/evalset.py score --gt /tmp/evalset/groundtruth.json --float float.npz \\
        --chip post-training=chip.npz -o bench/results/evalset.json

``score`` runs ``chipq eval`` on each file and adds the mAP per edit and, for chip descriptors,
the mean cosine of each image's descriptor to the float one.

``measure`` does all of it in one step (what ``bench/run_all.py --only evalset`` runs): builds the
set into ``<work>/evalset`` (with UKBench-56 when the shared data is there), makes the post-training
``3x7,1x6`` blob (`common.ptq_blob`, the shipped calibration photos), extracts NIP descriptors with
``chipq extract`` and scores them into ``bench/results/evalset.json``::

    python bench/evalset.py measure [--model vgg16.pt] [--chip LABEL=BLOB ...]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from chipq.data import default_photos_dir
from chipq.data import make_photos as mp

REPO = Path(__file__).resolve().parent.parent
EVAL_PHOTOS = REPO / "bench" / "evalset" / "photos"
SAMPLES = REPO / "samples"
SEED = 20261201
NEAR_DUPLICATE = 0.80  # high-pass thumbnail correlation at or above this: the same photo
WINDOWS = ((1.0, 1), (0.8, 3), (0.6, 3), (0.5, 3))  # (fraction of each side, grid positions per axis)
THUMB = 32

EVAL_GCOMPRIS = [
    ("categorization", "src/activities/categorization/resource/images/fishes/*"),
    ("explore_world_animals", "src/activities/explore_world_animals/resource/animals/*"),
]
LXQT = ("lxqt-themes", "1.2.0-1")
LXQT_DIR = "usr/share/lxqt/wallpapers"
# The photographs of that folder (the others are renders and logos), with the credit the folder's
# License file gives ("stefonarch: beam, flowers, butterfly, fog, not-windows, appleflowers,
# after-the-rain, drop"); the License file names no one else.
LXQT_PHOTOS = {
    "after-the-rain.jpg": "stefonarch (standreas@riseup.net); LXQt Project Team",
    "appleflower.png": "stefonarch (standreas@riseup.net); LXQt Project Team",
    "beam.png": "stefonarch (standreas@riseup.net); LXQt Project Team",
    "butterfly.png": "stefonarch (standreas@riseup.net); LXQt Project Team",
    "drop.png": "stefonarch (standreas@riseup.net); LXQt Project Team",
    "flowers.png": "stefonarch (standreas@riseup.net); LXQt Project Team",
    "fog.jpg": "stefonarch (standreas@riseup.net); LXQt Project Team",
    "this-is-not-windows.jpg": "stefonarch (standreas@riseup.net); LXQt Project Team",
    "Butterfly-Kenneth-Wimer.jpg": "LXQt Project Team (file name credits Kenneth Wimer)",
    "Valendas.png": "LXQt Project Team",
    "cloud.png": "LXQt Project Team",
}
PALAPELI = ("palapeli-data", "4:22.12.3-1")
PALAPELI_DIR = "usr/share/palapeli/collection"
PALAPELI_PHOTOS = ("cincinnati-bridge", "citrus-fruits", "european-honey-bee")

HEADER = """\
# Evaluation photos: sources and licences

{count} real photographs, {size:.2f} MB: the database of chipq's retrieval evaluation set
(`bench/evalset.py`, which made them and documents every step). None is a training or calibration
image: `python bench/evalset.py check` compares them with `compressor/data/photos/` and `samples/`
by SHA-256 and by thumbnail correlation.

Processing: decoded with Pillow {pillow}, alpha composited over white, longer side shrunk to at most
{max_side} px (LANCZOS, never enlarged), baseline JPEG quality {quality}, 4:2:0, no metadata.

Licences, as the source package states them: GCompris, the DEP-5 copyright file of
`gcompris-qt-data` for that very file (its `Files:` line names the source-tree `.jpg`, shipped as
`.webp` in a Qt resource bundle); LXQt, the `License` file of `/usr/share/lxqt/wallpapers`
("Copyright 2022: LXQt Project Team. Licensed under https://creativecommons.org/licenses/by-sa/3.0/");
Palapeli, the `X-KDE-PluginInfo-License` and `X-KDE-PluginInfo-Author` lines of the puzzle's
`.desktop` file.

## CC BY / CC BY-SA attribution

These files, and the edited queries `bench/evalset.py build` makes from them, are modified versions
(re-encoded, resized, cropped, rotated...) of the credited authors' photos, under the licence named
in their row (for CC BY-SA, the same licence); licence texts: https://creativecommons.org/licenses/.

| File | Source (package, version, path) | Licence | Author / credit | SHA-256 of the file here |
|---|---|---|---|---|
"""


# ---------------------------------------------------------------------------------------------
# photos: the committed database


def lxqt_photos(debs: Path, work: Path) -> list[mp.Photo]:
    root = mp.unpack_deb(mp.fetch_deb(*LXQT, debs), work / LXQT[0])
    folder = root / LXQT_DIR
    licence_file = (folder / "License").read_text(encoding="utf-8")
    if "creativecommons.org/licenses/by-sa/3.0" not in licence_file:
        raise SystemExit(f"{LXQT[0]}: {LXQT_DIR}/License no longer says CC BY-SA 3.0")
    photos = []
    for name, credit in sorted(LXQT_PHOTOS.items()):
        stem = name.rsplit(".", 1)[0].lower()
        photos.append(mp.Photo(
            name=f"lxqt-{stem}.jpg", source=f"{LXQT[0]} {LXQT[1]}, `/{LXQT_DIR}/{name}`",
            licence="CC BY-SA 3.0", credit=credit, data=mp.encode((folder / name).read_bytes())))
    return photos


def palapeli_photos(debs: Path, work: Path) -> list[mp.Photo]:
    root = mp.unpack_deb(mp.fetch_deb(*PALAPELI, debs), work / PALAPELI[0])
    folder = root / PALAPELI_DIR
    photos = []
    for stem in PALAPELI_PHOTOS:
        desktop = (folder / f"{stem}.desktop").read_text(encoding="utf-8")
        fields = dict(re.findall(r"^(X-KDE-PluginInfo-(?:License|Author))=(.*)$", desktop, re.M))
        if fields.get("X-KDE-PluginInfo-License") != "Public Domain":
            raise SystemExit(f"{PALAPELI[0]}: {stem}.desktop no longer says Public Domain")
        photos.append(mp.Photo(
            name=f"palapeli-{stem}.jpg", source=f"{PALAPELI[0]} {PALAPELI[1]}, `/{PALAPELI_DIR}/{stem}.jpg`",
            licence="Public domain", credit=fields["X-KDE-PluginInfo-Author"],
            data=mp.encode((folder / f"{stem}.jpg").read_bytes())))
    return photos


def make_eval_photos(out: Path, debs: Path) -> None:
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        photos = (mp.gcompris_photos(debs, work, EVAL_GCOMPRIS, "gcompris")
                  + lxqt_photos(debs, work) + palapeli_photos(debs, work))
    mp.write_set(photos, out, HEADER)
    print(f"{out}: {len(photos)} photos, {sum(len(p.data) for p in photos) / 1e6:.2f} MB")


# ---------------------------------------------------------------------------------------------
# check: disjointness from the training and calibration images


def training_images() -> list[Path]:
    """Every image chipq trains or calibrates on: the shipped set and everything in samples/."""
    files = sorted(default_photos_dir().glob("*.jpg"))
    files += sorted(p for p in SAMPLES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files


def eval_database(ukbench: Path | None) -> list[Path]:
    files = sorted(EVAL_PHOTOS.glob("*.jpg"))
    if ukbench is not None:
        files += sorted((ukbench / "jpg").glob("*.jpg"))
    return files


def _detail(view: Image.Image) -> np.ndarray:
    """A view as a standardised 32x32 high-pass thumbnail (grey minus its blur), flattened.

    The high-pass keeps the layout of edges and texture; plain grey thumbnails of two different
    low-texture photos (fog, sky) correlate up to 0.9, their high-pass versions stay near 0.5.
    """
    small = view.resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    a = np.asarray(small, dtype=np.float64) - np.asarray(small.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64)
    return a


def _unit(a: np.ndarray) -> np.ndarray:
    a = a.ravel() - a.mean()
    return a / (np.linalg.norm(a) + 1e-9)


def _windows(path: Path) -> np.ndarray:
    """(28, D): the whole image and 3x3 grids of windows at 80, 60 and 50 % of each side."""
    grey = _load(path).convert("L")
    w, h = grey.size
    rows = []
    for scale, n in WINDOWS:
        cw, ch = w * scale, h * scale
        for i in range(n):
            for j in range(n):
                x = (w - cw) * i / (n - 1) if n > 1 else 0
                y = (h - ch) * j / (n - 1) if n > 1 else 0
                box = (round(x), round(y), round(x + cw), round(y + ch))
                rows.append(_unit(_detail(grey.crop(box))))
    return np.stack(rows)


_WINDOW_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def _cached_windows(path: Path) -> np.ndarray:
    """`_windows`, kept per (path, size, mtime) for the life of the process (tests call it often)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _WINDOW_CACHE:
        _WINDOW_CACHE[key] = _windows(path)
    return _WINDOW_CACHE[key]


def _probe(path: Path) -> np.ndarray:
    """(4, D): the whole image under the 4 right-angle rotations."""
    detail = _detail(_load(path).convert("L"))
    return np.stack([_unit(np.rot90(detail, k)) for k in range(4)])


def check_disjoint(ukbench: Path | None) -> dict:
    """Compare every evaluation database image with every training image; raise on a match."""
    train = training_images()
    evals = eval_database(ukbench)
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    train_sha = {sha(p): p for p in train}
    same = [(str(p), str(train_sha[sha(p)])) for p in evals if sha(p) in train_sha]
    if same:
        raise SystemExit(f"evaluation image is a training image (same SHA-256): {same[0]}")
    # Every evaluation image (4 rotations) against every window of every training image: catches
    # re-encodes, resizes, 90-degree turns and crops near the window grid (measured on edited
    # training photos: >= 0.94; unrelated photos of the two sets: <= 0.51).
    windows = [_cached_windows(p) for p in train]
    probes = np.stack([_probe(p) for p in evals])  # (E, 4, D)
    corr = np.stack([np.einsum("wd,erd->ewr", t, probes).max(axis=(1, 2)) for t in windows])  # (T, E)
    t, e = np.unravel_index(np.argmax(corr), corr.shape)
    report = {
        "training_images": len(train), "evaluation_images": len(evals),
        "max_thumbnail_correlation": round(float(corr[t, e]), 4),
        "closest_pair": [str(train[t].relative_to(REPO) if train[t].is_relative_to(REPO) else train[t]),
                         str(evals[e].relative_to(REPO) if evals[e].is_relative_to(REPO) else evals[e])],
        "threshold": NEAR_DUPLICATE,
    }
    if corr[t, e] >= NEAR_DUPLICATE:
        raise SystemExit(f"near-duplicate of a training image: {report}")
    return report


# ---------------------------------------------------------------------------------------------
# build: queries and ground truth


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def _crop(image: Image.Image, rng: np.random.Generator, area: float, aspect: float = 1.0,
          corner: int | None = None) -> Image.Image:
    """A crop of `area` of the image; `aspect` scales its width/height ratio; seeded position."""
    w, h = image.size
    cw = min(w, max(8, round(w * np.sqrt(area * aspect))))
    ch = min(h, max(8, round(h * np.sqrt(area / aspect))))
    if corner is None:
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    else:  # a quadrant-biased place, so two crops of a photo differ
        fx, fy = (corner % 2), (corner // 2)
        jx, jy = rng.uniform(0, 0.25, size=2)
        x = round((w - cw) * (fx * (1 - jx) + (1 - fx) * jx))
        y = round((h - ch) * (fy * (1 - jy) + (1 - fy) * jy))
    return image.crop((x, y, x + cw, y + ch))


def _shrink(image: Image.Image, factor: float) -> Image.Image:
    size = (max(8, round(image.width / factor)), max(8, round(image.height / factor)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _aspect(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    stretch = 1.6 if rng.random() < 0.5 else 0.6
    if rng.random() < 0.5:
        return image.resize((round(image.width * stretch), image.height), Image.Resampling.BILINEAR)
    return image.resize((image.width, round(image.height * stretch)), Image.Resampling.BILINEAR)


def _strong(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    crop = _crop(image, rng, 0.5, aspect=float(rng.choice([0.7, 1.4])))
    crop = crop.transpose(Image.Transpose.ROTATE_270)
    crop = _shrink(crop, 2)
    crop = ImageEnhance.Contrast(crop).enhance(0.7)
    return ImageEnhance.Brightness(crop).enhance(0.8)


EDITS = {
    # name: (function(image, rng) -> image, JPEG quality)
    "crop25": (lambda im, rng: _crop(im, rng, 0.25, corner=int(rng.integers(0, 4))), 85),
    "jpeg10": (lambda im, rng: im, 10),
    "down5": (lambda im, rng: _shrink(im, 5), 85),
    "rot90": (lambda im, rng: im.transpose(Image.Transpose.ROTATE_90), 85),
    "aspect": (_aspect, 85),
    "strong": (_strong, 20),
    "crop25b": (lambda im, rng: _crop(im, rng, 0.25, corner=3 - int(rng.integers(0, 4))), 85),
}


def _save(image: Image.Image, path: Path, quality: int) -> None:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    path.write_bytes(out.getvalue())


def _load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB") if image.mode not in ("RGB", "L") else image.copy()


README = """\
# chipq retrieval evaluation set

Made by `python bench/evalset.py build` (chipq repo, `bench/evalset.py`; seed {seed}). Deterministic:
a rerun with the same Pillow writes the same bytes.

- `photos/`: {n_photos} database photos, copied from the repo's `bench/evalset/photos/` (their
  sources, licences and hashes: `photos/LICENSES.md`).
- `queries/`: {n_queries} edited copies: {n_edits} per database photo ({edits}; see the table in
  `bench/evalset.py`), whose only relevant item is that photo{ukbench_queries}.
{ukbench_line}- `groundtruth.json`: {{query: [relevant, ...]}}, names relative to this folder; {n_gt} queries.

Disjoint from every training and calibration image of chipq (`compressor/data/photos/`, `samples/`):
checked by SHA-256 and by 32x32 high-pass thumbnail correlation (4 rotations, against 28 windows of
each training image); highest correlation with any training image {max_corr}, threshold {thr}
(`{pair0}` vs `{pair1}`).

Evaluate (NIP at 224x224, Holidays-rule mAP; `--exclude-queries` keeps the edited copies out of
the database, the UKBench views stay in since they are each other's positives):

    chipq extract THIS_FOLDER --model vgg16.pt -o float.npz
    chipq eval float.npz --gt THIS_FOLDER/groundtruth.json --exclude-queries
"""


def build(out: Path, ukbench: Path | None, limit: int | None = None) -> dict:
    """Write the evaluation folder `out` (see the module docstring); `limit` keeps the first photos
    only (``bench/run_all.py --quick``)."""
    report = check_disjoint(ukbench)
    photos = sorted(EVAL_PHOTOS.glob("*.jpg"))[:limit]
    if not photos:
        raise SystemExit(f"{EVAL_PHOTOS}: no photos (run `python bench/evalset.py photos`)")
    for sub in ("photos", "queries", "ukbench"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    (out / "photos").mkdir(parents=True)
    (out / "queries").mkdir()
    gt: dict[str, list[str]] = {}
    for path in photos:
        shutil.copy2(path, out / "photos" / path.name)
        image = _load(path)
        for edit, (fn, quality) in EDITS.items():
            name = f"queries/{path.stem}_{edit}.jpg"
            _save(fn(image, _rng(f"{path.name}/{edit}")), out / name, quality)
            gt[name] = [f"photos/{path.name}"]
    shutil.copy2(EVAL_PHOTOS / "LICENSES.md", out / "photos" / "LICENSES.md")
    ukbench_line = ""
    if ukbench is not None:
        (out / "ukbench").mkdir()
        groups = json.loads((ukbench / "groundtruth.json").read_text())["groups"]
        groups = list(groups.values()) if isinstance(groups, dict) else groups
        for group in groups:
            names = [f"ukbench/{Path(g).name}" for g in group]
            for member in group:
                src = ukbench / "jpg" / Path(member).name
                shutil.copy2(src, out / "ukbench" / src.name)
                own = f"ukbench/{src.name}"
                gt[own] = [n for n in names if n != own]
                name = f"queries/ukbench_{src.stem}_strong.jpg"
                fn, quality = EDITS["strong"]
                _save(fn(_load(src), _rng(f"{src.name}/strong")), out / name, quality)
                gt[name] = names
        ukbench_line = (
            f"- `ukbench/`: the {sum(len(g) for g in groups)} UKBench-56 images ({len(groups)} objects x 4 real views;\n"
            "  research-use images, not redistributed by chipq): each is a query whose relevant items are\n"
            "  the other 3 views, and its `strong` edit (`queries/ukbench_*_strong.jpg`) a query whose\n"
            "  relevant items are all 4 views.\n")
    (out / "groundtruth.json").write_text(json.dumps(gt, indent=1, sort_keys=True) + "\n")
    n_queries = sum(1 for _ in (out / "queries").glob("*.jpg"))
    (out / "README.md").write_text(README.format(
        seed=SEED, n_photos=len(photos), n_queries=n_queries, n_edits=len(EDITS),
        edits=", ".join(EDITS), ukbench_line=ukbench_line,
        ukbench_queries=", plus one `strong` edit per UKBench image" if ukbench is not None else "", n_gt=len(gt),
        max_corr=report["max_thumbnail_correlation"], pair0=report["closest_pair"][0],
        pair1=report["closest_pair"][1], thr=NEAR_DUPLICATE))
    summary = {"out": str(out), "database_photos": len(photos), "queries": len(gt),
               "ukbench": ukbench is not None, "disjointness": report}
    return summary


# ---------------------------------------------------------------------------------------------
# score: mAP per edit and descriptor cosine to float, from `chipq extract` files


def _group(query: str) -> str:
    if query.startswith("ukbench/"):
        return "ukbench-views"
    edit = Path(query).stem.rsplit("_", 1)[1]
    return f"ukbench-{edit}" if Path(query).name.startswith("ukbench_") else edit


def _eval(npz: Path, gt: Path) -> dict:
    chipq = Path(sys.executable).with_name("chipq")
    out = subprocess.run([str(chipq) if chipq.exists() else "chipq", "eval", str(npz), "--gt", str(gt), "--exclude-queries", "--json"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"chipq eval {npz}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def score(gt: Path, float_npz: Path, chips: dict[str, Path]) -> dict:
    """mAP (all queries and per edit) of each descriptor file; for chips, the mean cosine to float."""
    ref = np.load(float_npz)
    ref_rows = dict(zip(ref["names"].tolist(), ref["descriptors"]))
    result = {"groundtruth": str(gt), "protocol": "chipq eval --exclude-queries (Holidays-rule mAP)",
              "models": {}}
    for label, npz in {"float": float_npz, **chips}.items():
        ev = _eval(npz, gt)
        groups: dict[str, list[float]] = {}
        for row in ev["results"]:
            groups.setdefault(_group(row["query"]), []).append(row["ap"])
        entry = {"descriptors": str(npz), "metadata": json.loads(str(np.load(npz)["metadata"])),
                 "map": round(ev["map"], 4), "queries": ev["queries"], "database": ev["database_size"],
                 "map_by_edit": {k: round(float(np.mean(v)), 4) for k, v in sorted(groups.items())}}
        if label != "float":
            data = np.load(npz)
            cos = []
            for name, d in zip(data["names"].tolist(), data["descriptors"]):
                f = ref_rows[name]
                d = d.astype(np.float64)
                cos.append(float(d @ f / (np.linalg.norm(d) * np.linalg.norm(f) + 1e-12)))
            entry["mean_cosine_to_float"] = round(float(np.mean(cos)), 4)
            entry["min_cosine_to_float"] = round(float(np.min(cos)), 4)
            entry["map_gap_to_float"] = round(ev["map"] - result["models"]["float"]["map"], 4)
        result["models"][label] = entry
    return result


def _extract(folder: Path, source: list[str], out: Path) -> Path:
    chipq = Path(sys.executable).with_name("chipq")
    command = [str(chipq) if chipq.exists() else "chipq", "extract", str(folder), *source, "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"chipq extract {' '.join(source)}: {done.stderr.strip()}")
    return out


def measure(model: Path | None, chips: dict[str, Path], work: Path, eval_dir: Path | None = None) -> dict:
    """Build (or take) the evaluation set, describe it with the float model, the post-training blob
    and every blob of `chips`, and score them (`score`)."""
    import common as cm

    from chipq.quant.calibrate import default_calib_dir

    model = cm.resolve_model(model)
    folder = Path(eval_dir) if eval_dir is not None else cm.eval_set(work)
    blob = cm.ptq_blob(model, cm.MAIN_PLAN, work, default_calib_dir(), (224, 224))
    blobs = {f"post-training-{cm.MAIN_PLAN}": blob, **chips}
    out = Path(work) / "evalset_descriptors"
    out.mkdir(parents=True, exist_ok=True)
    float_npz = _extract(folder, ["--model", str(model)], out / "float.npz")
    npz = {label: _extract(folder, ["--blob", str(path)], out / f"chip{i}.npz") for i, (label, path) in enumerate(blobs.items())}
    return score(folder / "groundtruth.json", float_npz, npz)


def render(result: dict) -> str:
    """The BENCHMARKS.md section: mAP per model and per edit, cosine to float."""
    import common as cm

    models = result["models"]
    edits = sorted({edit for entry in models.values() for edit in entry["map_by_edit"]})
    header = ["model", "mAP", "cos to float", *edits]
    rows = [[f"`{label}`", cm.fmt(entry["map"], 4), cm.fmt(entry.get("mean_cosine_to_float"), 4),
             *(cm.fmt(entry["map_by_edit"].get(edit), 3) for edit in edits)] for label, entry in models.items()]  # fmt: skip
    first = next(iter(models.values()))
    return "\n".join([
        "## Held-out evaluation set (`bench/evalset.py`)",
        "",
        f"NIP at 224x224, {result['protocol']}: {first['queries']} queries against {first['database']} database "
        "images, none of them a training or calibration photo; mAP per edit of the queries.",
        "",
        cm.md_table(header, rows),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("photos", help="rebuild bench/evalset/photos from the Debian packages")
    p.add_argument("--out", type=Path, default=EVAL_PHOTOS)
    p.add_argument("--debs", type=Path, default=mp.DEFAULT_DEBS)
    for name in ("build", "check"):
        q = sub.add_parser(name)
        q.add_argument("--ukbench", type=Path, default=None, help="UKBench-56 folder (jpg/, groundtruth.json)")
        if name == "build":
            q.add_argument("--out", type=Path, required=True)
    q = sub.add_parser("score", help="mAP per edit and cosine to float from `chipq extract` files")
    q.add_argument("--gt", type=Path, required=True)
    q.add_argument("--float", dest="float_npz", type=Path, required=True)
    q.add_argument("--chip", action="append", default=[], metavar="LABEL=NPZ")
    q.add_argument("-o", "--output", type=Path, default=None, help="also write the JSON here")
    q = sub.add_parser("measure", help="build, describe and score in one step (bench/results/evalset.json)")
    q.add_argument("--model", type=Path, default=None, help="float model (default: `chipq fetch-vgg16`'s cache)")
    q.add_argument("--chip", action="append", default=[], metavar="LABEL=BLOB", help="another blob to score")
    q.add_argument("--eval", type=Path, default=None, help="an evaluation folder made by `build` (default: built)")
    q.add_argument("--work", type=Path, default=None, help="default: $CHIPQ_BENCH_WORK or ~/.cache/chipq/bench")
    q.add_argument("-o", "--output", type=Path, default=REPO / "bench" / "results" / "evalset.json")
    args = parser.parse_args(argv)
    if args.cmd == "measure":
        import common as cm

        chips = {label: Path(path) for label, path in (item.split("=", 1) for item in args.chip)}
        result = measure(args.model, chips, args.work or cm.DEFAULT_WORK, args.eval)
        print(render(result))
        print(f"results -> {cm.write_json(args.output, result)}")
        return 0
    if args.cmd == "score":
        chips = dict(item.split("=", 1) for item in args.chip)
        result = score(args.gt, args.float_npz, {k: Path(v) for k, v in chips.items()})
        print(json.dumps(result, indent=1))
        if args.output:
            import common as cm

            cm.write_json(args.output, result)
        return 0
    if args.cmd == "photos":
        make_eval_photos(args.out, args.debs)
    elif args.cmd == "check":
        print(json.dumps(check_disjoint(args.ukbench), indent=1))
    else:
        print(json.dumps(build(args.out, args.ukbench), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
