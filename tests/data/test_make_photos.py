"""The pieces of compressor/data/make_photos.py: DEP-5 licences, Qt resource bundles, re-encoding."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from chipq.data import make_photos as mp

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: 2020 Someone
License: GPL-3+

Files: src/images/fish1.jpg
Copyright: Jane Doe
License: CC-BY-SA-3.0
Comment: https://commons.wikimedia.org/wiki/File:Fish.jpg

Files: src/images/*
 src/other/a.png
Copyright: Nobody
License: public-domain
 This is free.
 .
 Really.

Files: src/images/fish2.jpg
Copyright: X
License: CC-BY-NC-2.0
"""


def test_dep5_last_matching_stanza_wins_and_extensions_are_ignored():
    stanzas = mp.parse_dep5(COPYRIGHT)
    assert len(stanzas) == 4
    # fish1 is named before the wildcard stanza, so the wildcard (later) governs it.
    assert mp.dep5_stanza(stanzas, "src/images/fish1.webp")["License"].startswith("public-domain")
    nc = mp.dep5_stanza(stanzas, "src/images/fish2.webp")
    assert nc["License"] == "CC-BY-NC-2.0" and mp.licence_name(nc["License"]) is None
    assert mp.dep5_stanza(stanzas, "src/other/a.png")["Copyright"] == "Nobody"
    gpl = mp.dep5_stanza(stanzas, "README")
    assert mp.licence_name(gpl["License"]) is None
    assert mp.licence_name("CC-BY-SA-3.0") == "CC BY-SA 3.0"
    assert mp.licence_name("public-domain\nThis is free.") == "Public domain"


def _rcc(files: dict[str, bytes], compress: set[str]) -> bytes:
    """A version-2 Qt resource bundle holding `files` under one folder 'dir' (what rcc writes)."""
    names = b""
    name_off = {}
    for name in ["dir", *files]:
        name_off[name] = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(name), 0) + encoded
    data = b""
    data_off = {}
    for name, payload in files.items():
        data_off[name] = len(data)
        stored = struct.pack(">I", len(payload)) + zlib.compress(payload) if name in compress else payload
        data += struct.pack(">I", len(stored)) + stored
    node = lambda *fields: struct.pack(">IH", *fields[:2]) + fields[2] + b"\0" * 8  # noqa: E731
    tree = node(0, 2, struct.pack(">II", 1, 1))  # root: 1 child, index 1
    tree += node(name_off["dir"], 2, struct.pack(">II", len(files), 2))
    for name in files:
        flags = 1 if name in compress else 0
        tree += node(name_off[name], flags, struct.pack(">HHI", 0, 0, data_off[name]))
    header = 24
    return (b"qres" + struct.pack(">IIIII", 2, header, header + len(tree) + len(names), header + len(tree), 0)
            + tree + names + data)


def test_read_rcc_unpacks_plain_and_zlib_entries(tmp_path):
    files = {"a.webp": b"plain bytes", "b.png": b"squeezed " * 50}
    path = tmp_path / "x.rcc"
    path.write_bytes(_rcc(files, compress={"b.png"}))
    assert mp.read_rcc(path) == {"dir/a.webp": files["a.webp"], "dir/b.png": files["b.png"]}


def test_read_rcc_refuses_other_files(tmp_path):
    path = tmp_path / "x.rcc"
    path.write_bytes(b"PK\3\4 not a bundle")
    try:
        mp.read_rcc(path)
    except ValueError as error:
        assert "not a Qt resource bundle" in str(error)
    else:
        raise AssertionError("accepted a non-bundle")


def test_encode_shrinks_flattens_and_drops_metadata():
    rgba = np.zeros((300, 1000, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red where opaque, transparent (alpha 0) elsewhere
    rgba[:, :500, 3] = 255
    source = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "a description"
    Image.fromarray(rgba, "RGBA").save(source, "PNG", exif=exif)
    out = Image.open(io.BytesIO(mp.encode(source.getvalue())))
    assert out.format == "JPEG" and out.mode == "RGB" and out.size == (mp.MAX_SIDE, 192)
    assert "exif" not in out.info and "icc_profile" not in out.info
    pixels = np.asarray(out, dtype=int)
    assert abs(pixels[96, 100] - [200, 0, 0]).max() < 12  # opaque part kept
    assert abs(pixels[96, 600] - [255, 255, 255]).max() < 12  # transparent part is white
    small = io.BytesIO()
    Image.new("L", (120, 90), 77).save(small, "PNG")
    kept = Image.open(io.BytesIO(mp.encode(small.getvalue())))
    assert kept.size == (120, 90) and kept.mode == "L"  # never enlarged, grey stays grey


def test_a_raster_wildcard_governs_the_reencoded_file_but_an_svg_one_does_not():
    stanzas = mp.parse_dep5(
        "Files: a/fish.jpg\nCopyright: J\nLicense: CC0-1.0\n\n"
        "Files: a/*.svg\nCopyright: K\nLicense: GPL-3+\n\n"
        "Files: b/fish.jpg\nCopyright: J\nLicense: CC0-1.0\n\n"
        "Files: b/*.png\nCopyright: K\nLicense: GPL-3+\n")
    assert mp.dep5_stanza(stanzas, "a/fish.webp")["License"] == "CC0-1.0"
    assert mp.dep5_stanza(stanzas, "b/fish.webp")["License"] == "GPL-3+"
