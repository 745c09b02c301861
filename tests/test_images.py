"""Image loading: decoding rules, refusals, listing and resizing (chipq.images)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA
from PIL import Image

from chipq import images
from chipq.images import (
    ImageListError,
    ImageTooLarge,
    UndecodableImage,
    image_names,
    list_images,
    load_image,
    resize,
)

UKBENCH = SHARED_DATA / "ukbench56" / "jpg"


def _gradient(height: int, width: int) -> np.ndarray:
    """A uint8 RGB image whose pixels tell where they came from (rotations are detectable)."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256]
    return np.stack(planes, axis=2).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR announces width x height (8-bit RGB) but whose IDAT holds 8 zero bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(8)) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


def test_png_rgb_round_trip(tmp_path):
    pixels = _gradient(5, 7)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, pixels)


def test_exif_orientation_is_applied(tmp_path):
    # Orientation 6: the stored pixels must be turned 90 degrees clockwise to be upright.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red, right half blue as stored
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)  # turned: the width became the height
    top, bottom = out[5, 10], out[35, 10]
    assert top[0] > 200 and top[2] < 60  # stored left (red) is on top after a clockwise turn
    assert bottom[2] > 200 and bottom[0] < 60


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (0, 0, 0, 0)  # transparent black: white
    rgba[1, 0] = (0, 0, 0, 128)  # half transparent black: mid gray
    rgba[1, 1] = (200, 0, 0, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 1].tolist() == [255, 255, 255]
    assert all(120 <= v <= 130 for v in out[1, 0])


def test_grayscale_and_16_bit_grayscale(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "g16.png")
    out16 = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out16[:, :, 1], (deep >> 8).astype(np.uint8))


def test_palette_and_cmyk(tmp_path):
    pal = Image.fromarray(_gradient(4, 4)).convert("P")
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (4, 4, 3)
    Image.new("CMYK", (6, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # CMYK red
    red = load_image(tmp_path / "c.jpg")
    assert red.shape == (3, 6, 3) and red[1, 1, 0] > 200 and red[1, 1, 1] < 60


def test_multi_picture_jpeg_uses_the_first_frame(tmp_path):
    first = Image.new("RGB", (8, 8), (200, 200, 200))
    first.save(tmp_path / "mpo.jpg", format="MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    assert abs(float(load_image(tmp_path / "mpo.jpg").mean()) - 200) < 2


def test_corrupt_files_are_undecodable(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    Image.fromarray(_gradient(64, 64)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(_gradient(8, 8)).save(tmp_path / "x.gif")  # a decoder we do not use
    for name in ("text.jpg", "cut.jpg", "x.gif", "missing.png"):
        with pytest.raises(UndecodableImage, match=name):
            load_image(tmp_path / name)


def test_bomb_header_is_refused_before_decoding(tmp_path, monkeypatch):
    # 9000 x 9000 is over our cap and under Pillow's own; the file has no pixel data at all, so
    # reaching the decoder would give UndecodableImage, not ImageTooLarge.
    _png_header_only(tmp_path / "bomb.png", 9000, 9000)
    with pytest.raises(ImageTooLarge, match="9000x9000"):
        load_image(tmp_path / "bomb.png")
    # Pillow's own bomb error (far beyond its limit, raised inside Image.open) is a refusal too.
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10**12)
    _png_header_only(tmp_path / "huge.png", 60000, 60000)
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        load_image(tmp_path / "huge.png")


def test_pillow_bomb_warning_is_a_refusal(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10**12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # warns from 101 pixels, errors from 201
    Image.fromarray(_gradient(10, 15)).save(tmp_path / "a.png")
    with pytest.raises(ImageTooLarge):
        load_image(tmp_path / "a.png")


def test_list_folder_recursive_sorted_filtered(tmp_path):
    files = ["b/2.JPG", "b/10.png", "a.jpeg", "c/d/e.jpg", "notes.txt", ".hidden.jpg", ".git/x.jpg", "z.gif"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.jpeg", "b/10.png", "b/2.JPG", "c/d/e.jpg"]


def test_list_file_relative_to_itself(tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "list.txt"
    listing.write_text("# photos\nz.jpg\n\n  ../y.png  \n/abs/x.jpg\n", encoding="utf-8")
    expected = [tmp_path / "sub" / "z.jpg", tmp_path / "sub" / ".." / "y.png", Path("/abs/x.jpg")]
    assert list_images(listing) == expected
    names = image_names(expected, listing)
    assert names[:2] == ["z.jpg", "../y.png"] and names[2].endswith("../abs/x.jpg")
    with pytest.raises(ImageListError, match="no such"):
        list_images(tmp_path / "nowhere")
    listing.write_text("a.jpg\n./a.jpg\n", encoding="utf-8")
    with pytest.raises(ImageListError, match="line 2 repeats line 1"):
        list_images(listing)


def test_image_names_are_relative_posix(tmp_path):
    (tmp_path / "q").mkdir()
    for rel in ("q/b.png", "a.jpg"):
        (tmp_path / rel).write_bytes(b"")
    assert image_names(list_images(tmp_path), tmp_path) == ["a.jpg", "q/b.png"]


def test_resize_shape_dtype_and_antialias():
    # A one-pixel checkerboard shrunk 4x: antialiasing averages it to gray; point sampling would not.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    img = np.repeat(board[:, :, None], 3, axis=2)
    small = resize(img, (16, 16))
    assert small.dtype == np.uint8 and small.shape == (16, 16, 3)
    assert np.all(np.abs(small.astype(int) - 128) <= 2)
    wide = resize(_gradient(30, 40), (7, 11))
    assert wide.shape == (7, 11, 3)
    np.testing.assert_array_equal(resize(wide, (7, 11)), wide)
    with pytest.raises(ValueError, match="uint8"):
        resize(img.astype(np.float32), (4, 4))


@pytest.mark.skipif(not UKBENCH.is_dir(), reason="shared ukbench56 photos not present")
def test_real_photos():
    paths = list_images(UKBENCH)
    assert len(paths) == 56 and paths[0].name == "ukbench00000.jpg"
    for path in paths[:2]:
        img = load_image(path)
        assert img.shape == (480, 640, 3) and img.dtype == np.uint8
