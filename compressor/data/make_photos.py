"""Build chipq's shipped training/calibration photo set, `compressor/data/photos/`.

This is the record of how every shipped file was made, and it reruns: it fetches the named Debian
packages at the pinned versions (`apt-get download`, cached in ``--debs``), unpacks them without
installing (`dpkg-deb -x`), reads each photo's licence from the package itself, keeps only
public-domain, CC0, CC BY and CC BY-SA photographs, re-encodes them, and writes the folder and its
``LICENSES.md`` table (file, source package+version+path, licence, author, SHA-256).

Sources of the training set (chosen by hand, by looking at every candidate: photographs only, no
drawings, renders or icons):

* GCompris (Debian ``gcompris-qt-data`` 3.1-2), the photographs of the "categorization" activity
  in the folders ``monuments``, ``renewable``, ``tools`` and ``others``, each with the licence
  that ``/usr/share/doc/gcompris-qt-data/copyright`` (DEP-5) gives to its own file (GPL-only
  files are left out). GCompris stores them as WebP inside Qt resource bundles
  (``/usr/share/gcompris-qt/rcc/categorization.rcc``); `read_rcc` unpacks them.

The evaluation set (`bench/evalset.py`) uses other files: the GCompris "fishes" and
"explore_world_animals" photos, LXQt wallpapers, KDE Palapeli puzzles and UKBench; none of them is
here, and `bench/evalset.py` checks that (SHA-256 and a thumbnail correlation).

Processing of every file that is not copied: decode with Pillow, keep the first frame, composite
any alpha over white, convert to RGB (greyscale stays single-channel), shrink so that the longer
side is at most `MAX_SIDE` pixels (Pillow LANCZOS; never enlarged), save as baseline JPEG at
quality `QUALITY` with Pillow's default 4:2:0 chroma subsampling and no metadata (no EXIF, ICC or
comments). Pillow's encoder is deterministic, so a rerun with the same Pillow gives the same bytes.

Usage (needs Debian's apt tools; run as a user that may call ``apt-get download``)::

    python compressor/data/make_photos.py                 # rewrites compressor/data/photos/
    python compressor/data/make_photos.py --out /tmp/x    # writes elsewhere
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MAX_SIDE = 640
QUALITY = 90
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path(__file__).resolve().parent / "photos"
DEFAULT_DEBS = Path(tempfile.gettempdir()) / "chipq-photo-debs"

# Licences accepted, as DEP-5 short names -> the name written in LICENSES.md.
LICENCE_NAMES = {
    "public-domain": "Public domain",
    "CC0-1.0": "CC0 1.0",
    "CC-BY-1.0": "CC BY 1.0",
    "CC-BY-2.0": "CC BY 2.0",
    "CC-BY-2.5": "CC BY 2.5",
    "CC-BY-3.0": "CC BY 3.0",
    "CC-BY-4.0": "CC BY 4.0",
    "CC-BY-SA-2.0": "CC BY-SA 2.0",
    "CC-BY-SA-2.5": "CC BY-SA 2.5",
    "CC-BY-SA-3.0": "CC BY-SA 3.0",
    "CC-BY-SA-4.0": "CC BY-SA 4.0",
}

RASTER = {"jpg", "jpeg", "png", "webp"}
GCOMPRIS = ("gcompris-qt-data", "3.1-2")
GCOMPRIS_COPYRIGHT = "usr/share/doc/gcompris-qt-data/copyright"
GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc"
# The source tree path GCompris' copyright file uses is the resource path inside the .rcc file.
# Typos in the copyright file's Files: lines, as (file in the bundle, name the copyright uses).
GCOMPRIS_ALIASES = {
    "src/activities/categorization/resource/images/monuments/brandenburgGate":
        "src/activities/categorization/resource/images/monuments/beandenburgGate",
}
TRAIN_GCOMPRIS = [
    ("categorization", "src/activities/categorization/resource/images/monuments/*"),
    ("categorization", "src/activities/categorization/resource/images/renewable/*"),
    ("categorization", "src/activities/categorization/resource/images/tools/*"),
    ("categorization", "src/activities/categorization/resource/images/others/*"),
]
SAMPLES = REPO / "samples" / "photos"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*`([0-9a-f]{64})`\s*\|\s*$")


@dataclass
class Photo:
    """One photo to ship: where it comes from, its licence, and its bytes once made."""

    name: str  # file name in the output folder
    source: str  # "package version, `path`"
    licence: str
    credit: str
    data: bytes  # the encoded JPEG as shipped


# ---------------------------------------------------------------------------------------------
# Debian packages


def fetch_deb(package: str, version: str, debs: Path) -> Path:
    """The .deb of package=version in `debs`, downloaded with `apt-get download` when missing."""
    debs.mkdir(parents=True, exist_ok=True)
    epochless = version.split(":", 1)[-1]
    for path in sorted(debs.glob(f"{package}_*.deb")):
        if path.name.split("_")[1].replace("%3a", ":").split(":", 1)[-1] == epochless:
            return path
    subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=debs, check=True,
                   stdout=subprocess.DEVNULL)
    return fetch_deb(package, version, debs)


def unpack_deb(deb: Path, into: Path) -> Path:
    """Unpack a .deb's files (not its scripts) into `into`; returns `into`."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def parse_dep5(text: str) -> list[dict[str, str]]:
    """The Files stanzas of a machine-readable (DEP-5) copyright file, in file order."""
    stanzas = []
    for para in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.split("\n"):
            match = re.match(r"^([A-Za-z-]+):[ \t]?(.*)$", line)
            if match and not line[:1].isspace():
                key = match.group(1)
                fields[key] = match.group(2).strip()
            elif key is not None and line.strip():
                stripped = line.strip()
                fields[key] += "\n" + ("" if stripped == "." else stripped)
        if "Files" in fields:
            stanzas.append({k: v.strip() for k, v in fields.items()})
    return stanzas


def dep5_stanza(stanzas: list[dict[str, str]], path: str) -> dict[str, str] | None:
    """The stanza that governs `path` (the last matching one, as DEP-5 says).

    GCompris' copyright names the files of its source tree (``.jpg``/``.png``); the package ships
    them re-encoded (``.webp``) under the same name, so a pattern ending in a raster image
    extension is also compared without its extension (``x/*.jpg`` governs ``x/a.webp``).
    """
    stem = path.rsplit(".", 1)[0]
    stem = GCOMPRIS_ALIASES.get(stem, stem)
    hit = None
    for stanza in stanzas:
        for pattern in stanza["Files"].split():
            base, _, ext = pattern.rpartition(".")
            pattern_stem = base if ext.lower() in RASTER and "/" not in ext else None
            if fnmatch.fnmatchcase(path, pattern) or (
                pattern_stem is not None and fnmatch.fnmatchcase(stem, pattern_stem)
            ):
                hit = stanza
    return hit


# ---------------------------------------------------------------------------------------------
# Qt resource bundles (.rcc)


def read_rcc(path: Path) -> dict[str, bytes]:
    """Every file of a Qt binary resource bundle: {path inside the bundle: bytes}.

    Format (Qt's rcc, versions 1-3): a header ``qres``, version, and the offsets of the tree, the
    data and the names; tree nodes of 14 (v1) or 22 bytes (name offset, flags, then children or
    data offset); flag 1 = zlib-compressed (4-byte size, then the stream), 2 = directory,
    4 = zstd (not used by GCompris; refused).
    """
    blob = path.read_bytes()
    if blob[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource bundle")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset:names + offset + 2])
        return blob[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[at:at + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:
            count, first = struct.unpack(">II", blob[at + 6:at + 14])
            for child in range(first, first + count):
                walk(child, f"{prefix}{name}/" if name else prefix)
            return
        (offset,) = struct.unpack(">I", blob[at + 10:at + 14])
        (size,) = struct.unpack(">I", blob[data + offset:data + offset + 4])
        raw = blob[data + offset + 4:data + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: zstd-compressed entry {prefix}{name}")
        files[prefix + name] = zlib.decompress(raw[4:]) if flags & 1 else raw

    walk(0, "")
    return files


# ---------------------------------------------------------------------------------------------
# Processing


def encode(data: bytes) -> bytes:
    """Decode an image, shrink it to `MAX_SIDE`, and encode it as a metadata-free JPEG."""
    image = Image.open(io.BytesIO(data))
    image.seek(0)
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    else:
        image.load()
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def licence_name(dep5: str) -> str | None:
    """The LICENSES.md name of a DEP-5 licence, or None when it is not accepted."""
    return LICENCE_NAMES.get(dep5.strip().split("\n")[0].strip())


def one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.split("\n") if part.strip()).replace("|", "/")


def gcompris_photos(debs: Path, work: Path, selection: list[tuple[str, str]], prefix: str) -> list[Photo]:
    """The licensed photographs of GCompris that `selection` names: (bundle, path pattern)."""
    root = unpack_deb(fetch_deb(*GCOMPRIS, debs), work / GCOMPRIS[0])
    stanzas = parse_dep5((root / GCOMPRIS_COPYRIGHT).read_text(encoding="utf-8"))
    photos = []
    bundles: dict[str, dict[str, bytes]] = {}
    for bundle, pattern in selection:
        if bundle not in bundles:
            bundles[bundle] = read_rcc(root / GCOMPRIS_RCC / f"{bundle}.rcc")
        for inner in sorted(bundles[bundle]):
            path = inner.removeprefix("gcompris/")
            if not fnmatch.fnmatchcase(path, pattern):
                continue
            stanza = dep5_stanza(stanzas, path)
            licence = licence_name(stanza["License"]) if stanza else None
            if licence is None:
                continue
            folder, stem = path.split("/")[-2], path.rsplit("/", 1)[1].rsplit(".", 1)[0]
            credit = one_line(stanza.get("Copyright", ""))
            if stanza.get("Comment"):
                credit += f" ({one_line(stanza['Comment'])})"
            photos.append(Photo(
                name=f"{prefix}-{folder}-{stem}.jpg".lower(),
                source=f"{GCOMPRIS[0]} {GCOMPRIS[1]}, `{GCOMPRIS_RCC}/{bundle}.rcc:{path}`",
                licence=licence, credit=credit, data=encode(bundles[bundle][inner])))
    return photos


# ---------------------------------------------------------------------------------------------
# Output

HEADER = """\
# Training and calibration photos shipped with chipq: sources and licences

{count} real photographs, {size:.2f} MB, the default image set of `chipq compress` (calibration and
Algorithm 1 retraining). Installed as package data of `chipq.data`; `chipq.data.default_photos_dir()`
returns the folder. Made by `compressor/data/make_photos.py`, which documents every step and reruns.

Only photos whose licence is stated by the package they come from, and only public domain, CC0,
CC BY and CC BY-SA. For GCompris the licence and credit are those that Debian's machine-readable
copyright file of `gcompris-qt-data` (`/usr/share/doc/gcompris-qt-data/copyright`) gives to that
very file (its `Files:` line names the source-tree `.jpg`; the package ships it as `.webp` in a Qt
resource bundle); the credit column copies its `Copyright:` and `Comment:` (the photo's page).

None of these photos, nor any photo of the same scene, is in the evaluation set
(`bench/evalset.py` checks it by SHA-256 and by thumbnail correlation).

`tests/data/test_photos.py` reads the table: every photo in this folder must have exactly one row,
and the last column must be the file's SHA-256.

## Processing

- `gcompris-*`: decoded from WebP with Pillow {pillow}, RGB, longer side at most {max_side} px
  (LANCZOS, never enlarged; these photos are 320 px or smaller and keep their size), saved as
  baseline JPEG quality {quality}, 4:2:0 chroma subsampling, no metadata.

## CC BY / CC BY-SA attribution

The files here are modified versions (re-encoded, possibly resized) of the credited authors'
photos and are distributed under the licence named in their row (for CC BY-SA, the same licence);
licence texts: https://creativecommons.org/licenses/.

| File | Source (package, version, path) | Licence | Author / credit | SHA-256 of the file here |
|---|---|---|---|---|
"""


def write_set(photos: list[Photo], out: Path, header: str) -> None:
    """Write the photos and LICENSES.md into `out`, replacing the JPEGs a previous run left."""
    names = [p.name for p in photos]
    if len(set(names)) != len(names):
        raise SystemExit("two photos would get the same file name")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jpg"):
        old.unlink()
    rows = []
    for photo in sorted(photos, key=lambda p: p.name):
        (out / photo.name).write_bytes(photo.data)
        digest = hashlib.sha256(photo.data).hexdigest()
        rows.append(f"| `{photo.name}` | {photo.source} | {photo.licence} | {photo.credit} | `{digest}` |")
    size = sum(len(p.data) for p in photos) / 1e6
    import PIL

    text = header.format(count=len(photos), size=size, pillow=PIL.__version__, max_side=MAX_SIDE,
                         quality=QUALITY)
    (out / "LICENSES.md").write_text(text + "\n".join(rows) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--debs", type=Path, default=DEFAULT_DEBS, help="cache of downloaded .deb files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        # samples/photos stays out: the demo scores retrieval on samples/, never on training photos
        photos = gcompris_photos(args.debs, Path(work), TRAIN_GCOMPRIS, "gcompris")
    write_set(photos, args.out, HEADER)
    print(f"{args.out}: {len(photos)} photos, {sum(len(p.data) for p in photos) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
