"""Activation calibration: each conv layer's output fraction bits from real images.

The rule (docs/compress.md, "Calibration and reconstruction"): for every conv layer, take the float model's ReLU outputs on the
calibration images and choose the fraction bits f for which uint8 activations
``clip(round_half_up(x * 2**f), 0, 255) * 2**-f`` have the smallest mean squared error to x.
Candidates run from the largest f that clips nothing up to four more bits of resolution.

`quantize_activations` is the numpy statement of the 8-bit activation rule; its torch form, what
the torch model of the chip runs, is `chipq.quant.chipnet.activations` (tested equal to it).

`calibration_images` reads the calibration photos (the first `chipq.quant.MAX_CALIB_IMAGES` of a
folder or list file, at the chip input size). This module needs no PyTorch, so `chipq.pipeline.checks`
and the CLI can read and check photos before it loads.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from chipq.formats import constants as C
from chipq.images import EmptyCalibration, ImageError, list_images, load_image, resize
from chipq.quant import MAX_CALIB_IMAGES
from chipq.quant.quantize import round_half_up

EXTRA_BITS = 4  # finer scales tried beyond the one that clips nothing
FRAC_LIMIT = 31  # |f| beyond this cannot be reached by a 5-bit out_shift anyway
MAX_SAMPLES = 1 << 20  # activations kept per layer: a fixed stride, so the choice is deterministic


def quantize_activations(x: np.ndarray, frac: int) -> np.ndarray:
    """What 8-bit unsigned activations at `frac` fraction bits make of float values `x`.

    >>> quantize_activations(np.array([0.0, 0.24, 0.26, 100.0]), 2).tolist()
    [0.0, 0.25, 0.25, 63.75]
    """
    q = np.clip(round_half_up(x * 2.0**frac), 0, C.ACT_MAX)
    return q.astype(np.float64) * 2.0**-frac


def choose_frac(x: np.ndarray) -> int:
    """Fraction bits for one layer's float activations `x` (any shape), by least squared error.

    >>> choose_frac(np.array([0.0, 1.0, 3.0, 200.0]))
    0
    >>> choose_frac(np.array([0.1, 0.2, 0.9]))
    8
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    peak = float(x.max(initial=0.0))
    if peak <= 2.0**-FRAC_LIMIT:
        return FRAC_LIMIT if peak > 0 else 0
    no_clip = min(max(math.floor(math.log2(C.ACT_MAX / peak)), -FRAC_LIMIT), FRAC_LIMIT)
    errors = [
        (float(np.mean((quantize_activations(x, f) - x) ** 2)), f)
        for f in range(no_clip, no_clip + EXTRA_BITS + 1)
    ]
    return min(errors)[1]


def subsample(x: np.ndarray) -> np.ndarray:
    """At most MAX_SAMPLES values of `x`, taken at a fixed stride."""
    flat = np.asarray(x).ravel()
    step = max(1, math.ceil(flat.size / MAX_SAMPLES))
    return flat[::step]


class RunningSample:
    """`subsample` of an array that arrives in pieces along its first axis (the same values, in order).

    Calibration and reconstruction see a layer's output a few images at a time; this keeps only
    the values at the fixed stride that `subsample` of the whole array would take.

    >>> x = np.arange(30.0).reshape(6, 5)
    >>> running = RunningSample(x.size, limit=7)
    >>> for piece in (x[:1], x[1:4], x[4:]):
    ...     running.add(piece)
    >>> bool(np.array_equal(running.values(), x.ravel()[::5]))
    True
    """

    def __init__(self, total: int, limit: int | None = None) -> None:
        self.step = max(1, math.ceil(total / (MAX_SAMPLES if limit is None else limit)))
        self.seen = 0
        self.parts: list[np.ndarray] = []

    def add(self, piece: np.ndarray, relu: bool = False) -> None:
        """Keep `piece`'s values at the stride; `relu`: those of ``max(piece, 0)`` (only the kept
        values are cut, not the whole piece)."""
        flat = np.asarray(piece).ravel()
        kept = flat[(-self.seen) % self.step :: self.step]
        self.parts.append(np.maximum(kept, 0) if relu else kept.copy())
        self.seen += flat.size

    def values(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


def choose_fracs(conv_outputs: list[np.ndarray]) -> list[int]:
    """Fraction bits for every conv layer from its float outputs on the calibration images."""
    return [choose_frac(subsample(x)) for x in conv_outputs]


def default_calib_dir() -> Path:
    """The photo set that ships inside the package (`chipq.data`): works from any install."""
    from chipq.data import default_photos_dir

    return default_photos_dir()


def calibration_batch(
    source: Path, size: tuple[int, int] = C.CHIP_INPUT_HW, limit: int = MAX_CALIB_IMAGES
) -> np.ndarray:
    """The calibration images of a folder or list file, resized to the chip input.

    Undecodable files are skipped; an empty result is an error.

    Returns:
        uint8 (N, 3, H, W), RGB.
    """
    return calibration_images(source, size, limit)[0]


def calibration_images(
    source: Path, size: tuple[int, int] = C.CHIP_INPUT_HW, limit: int = MAX_CALIB_IMAGES
) -> tuple[np.ndarray, list[str]]:
    """`calibration_batch` and the file name of each image in it (skipped files left out)."""
    images, names = [], []
    for path in list_images(Path(source)):
        if len(images) == limit:
            break
        try:
            images.append(resize(load_image(path), size).transpose(2, 0, 1))
        except ImageError:
            continue
        names.append(path.name)
    if not images:
        raise EmptyCalibration(f"calibration source {source}: no decodable JPEG or PNG image")
    return np.ascontiguousarray(np.stack(images)), names
