"""Images in: find them, decode them safely, make them uint8 RGB, resize them.

Every function here returns numpy arrays of shape (H, W, 3), dtype uint8, planes in RGB order.
Decoding rules, in the order they are applied:

1. Only JPEG and PNG decoders are used, whatever the file name says.
2. The size in the header is checked before any pixel is decoded: more than `MAX_IMAGE_PIXELS`
   pixels is refused (`ImageTooLarge`), as is Pillow's own decompression-bomb error or warning.
3. The EXIF orientation tag is applied (`PIL.ImageOps.exif_transpose`), so the array is the image
   as a viewer shows it.
4. The first frame is used (multi-picture JPEGs, animated PNGs).
5. Colour: RGB is kept; grayscale is copied to three planes; 16-bit grayscale keeps its high byte;
   palette and CMYK are converted by Pillow; an alpha channel is composited over white (a
   transparent pixel's stored colour is often arbitrary, white is what a viewer shows). ICC
   profiles are ignored.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from chipq.errors import ChipqError
from chipq.formats.fileio import FileRefused, open_regular, read_regular

# 8192 x 8192 = 64 Mi pixels, 192 MiB as RGB: far above a camera photo, far below a bomb.
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_LIST_BYTES = 256 << 20  # an image list file: millions of paths
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
DECODERS = ("JPEG", "PNG")
# Resampling for every resize: Pillow's bilinear filter widens its support by the downscale
# factor, so shrinking is antialiased (a triangle filter over all covered pixels, not 4 taps).
RESAMPLE = Image.Resampling.BILINEAR
BACKGROUND = (255, 255, 255)  # what transparent pixels become


class ImageError(ChipqError):
    """One image could not be used; callers that process many images catch this to skip it."""


class UndecodableImage(ImageError):
    """The file is missing, unreadable, not a JPEG/PNG, or its data is corrupt or cut short."""


class ImageTooLarge(ImageError):
    """The header announces more pixels than `MAX_IMAGE_PIXELS` (a possible decompression bomb)."""


class ImageListError(ChipqError):
    """The image source (a folder or a list file) cannot be used."""


class EmptyCalibration(ChipqError):
    """The calibration source holds no image chipq can decode."""


def list_images(source: Path) -> list[Path]:
    """Every image a source names, in a deterministic order.

    A folder is searched recursively for files whose extension is .jpg, .jpeg or .png (any case);
    names starting with "." (hidden files, macOS "._" companions) are skipped, symbolic links to
    folders are not followed; the result is sorted by the path relative to the folder, compared
    as POSIX strings. A file is read as a list: UTF-8, one path per line, relative paths taken
    from the list file's folder, blank lines and lines starting with "#" ignored, order kept.
    Listed paths are not checked here (a missing one fails when it is loaded), except that a path
    listed twice is refused.

    Args:
        source: a folder or a list file.

    Returns:
        The image paths.

    Raises:
        ImageListError: the source does not exist, the list file cannot be read or repeats a path.
    """
    source = Path(source)
    try:
        source.lstat()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a name too long, a loop of links
        raise ImageListError(f"{str(source)[:120]}: cannot use as a folder or list file ({exc.strerror or exc})") from None
    if source.is_dir():
        return _walk(source)
    if source.is_file():
        return _read_list(source)
    if os.path.lexists(source):
        raise ImageListError(f"{source}: not a folder or a regular list file")
    raise ImageListError(f"{source}: no such folder or list file")


def _walk(root: Path) -> list[Path]:
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=False):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(folder, name))
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _read_list(list_file: Path) -> list[Path]:
    try:
        text = read_regular(list_file, MAX_LIST_BYTES, "image list").decode("utf-8")
    except FileRefused as exc:
        raise ImageListError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageListError(f"{list_file}: cannot read the image list ({exc})") from exc
    paths, seen = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = list_file.parent / entry
        key = os.path.normpath(path)
        if key in seen:
            raise ImageListError(f"{list_file}: line {number} repeats line {seen[key]} ({entry!r})")
        seen[key] = number
        paths.append(path)
    return paths


def image_names(paths: list[Path], source: Path) -> list[str]:
    """The name each image gets in a descriptor file: its path relative to the source folder (or to
    the list file's folder), normalised, with "/" separators, e.g. ``queries/a.jpg``.

    Ground-truth files name images the same way.
    """
    source = Path(source)
    root = source if source.is_dir() else source.parent
    return [Path(os.path.relpath(path, root)).as_posix() for path in paths]


def load_image(path: Path) -> np.ndarray:
    """Decode one JPEG or PNG file into an upright RGB array.

    Args:
        path: the image file.

    Returns:
        uint8 array (H, W, 3), RGB.

    Raises:
        ImageTooLarge: the header announces more than `MAX_IMAGE_PIXELS` pixels.
        UndecodableImage: anything else that stops the file from being decoded.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between its own limit and twice it; a warning is a refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path, "image") as handle, Image.open(handle, formats=DECODERS) as im:
                _check_size(path, im.size)  # Image.open read the header only
                return _to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except FileRefused as exc:
        raise UndecodableImage(str(exc)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{path}: refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError:
        raise UndecodableImage(f"{path}: cannot decode: not a JPEG or PNG image") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, struct.error) as exc:
        # Pillow reports corrupt data through several exception types; all mean "cannot decode".
        raise UndecodableImage(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc


def _check_size(path: Path, size: tuple[int, int]) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise UndecodableImage(f"{path}: empty image {width}x{height}")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"{path}: {width}x{height} = {width * height} pixels, more than the "
            f"{MAX_IMAGE_PIXELS} allowed"
        )


def _to_rgb(im: Image.Image) -> np.ndarray:
    """The RGB pixels of a decoded Pillow image (module docstring, rule 5)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's own I -> L conversion clips at 255; keep the high byte of the 16-bit value.
        gray = (np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    ):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        im = Image.alpha_composite(background, rgba)
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image with Pillow's bilinear filter, antialiased when shrinking.

    Pillow resamples 8-bit images in fixed-point arithmetic, so the result is the same on every
    machine.

    Args:
        img: uint8 array (H, W, 3).
        size: (height, width) of the result, each at least 1.

    Returns:
        uint8 array (height, width, 3).
    """
    check_rgb(img)
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"resize: target size {height}x{width} must be at least 1x1")
    if img.shape[:2] == (height, width):
        return img.copy()
    out = Image.fromarray(img).resize((width, height), RESAMPLE)
    return np.asarray(out, dtype=np.uint8).copy()


def check_rgb(img: np.ndarray) -> None:
    """Raise ValueError unless `img` is a uint8 (H, W, 3) array."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got shape {shape} dtype {dtype}")
