"""Images to NIP / RNIP descriptors, given any function that turns pixels into feature maps.

The feature function is the network (the float model or the chip's integer executor). It receives
a batch as a uint8 numpy array (N, 3, H, W), planes in RGB order, every input the chip's buffer
size, and returns float32 feature maps (N, C, h, w). Nothing here knows how the maps are made.

Network inputs, in batch order:

- NIP: the image is resized to the buffer size and turned by 0, 90, 180 and 270 degrees
  (`numpy.rot90`, counter-clockwise, exact). For a non-square buffer the 90/270 turns are made
  from the image resized to the transposed size, so every input has the buffer's shape.
- RNIP: each crop of `chipq.retrieval.rois.rnip_crops` (cut from the image at its own resolution) gets the
  same treatment; inputs are ordered crop by crop, four rotations each.

Inputs go through the feature function in chunks of `batch_size`; each map is reduced to a vector
as soon as it arrives, so memory does not grow with the number of crops. The result equals
`chipq.retrieval.pooling.nip_from_maps` / `pool_crops` on the same maps.

`describe_all` runs a list of images into a `chipq.retrieval.descriptors.DescriptorStore` (checkpoints,
resume), skipping and reporting the images that cannot be decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chipq import __version__
from chipq.errors import ChipqError
from chipq.formats import constants as C
from chipq.formats.fileio import FileRefused, open_regular
from chipq.images import ImageError, check_rgb, load_image, resize
from chipq.retrieval.descriptors import DescriptorStore
from chipq.retrieval.pooling import finish, nip_rotation_vector, whole_map_pool
from chipq.retrieval.rois import Box, rnip_crops

FeatureFn = Callable[[np.ndarray], np.ndarray]

ROTATIONS = (0, 1, 2, 3)  # quarter turns
DEFAULT_BATCH_SIZE = 16


def quarter_turns(image_chw: np.ndarray) -> np.ndarray:
    """The NIP rotations of a square (3, H, W) network input as a (4, 3, H, W) batch."""
    return np.stack([np.rot90(image_chw, turns, axes=(1, 2)) for turns in ROTATIONS]).copy()


def rotated_inputs(img: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    """The four network inputs of one image or crop: resized, turned, each (H, W, 3) uint8."""
    height, width = size
    upright = resize(img, (height, width))
    sideways = upright if height == width else resize(img, (width, height))
    return [np.rot90(upright if turns % 2 == 0 else sideways, turns).copy() for turns in ROTATIONS]


def describe(
    img: np.ndarray,
    features: FeatureFn,
    *,
    size: tuple[int, int] = C.CHIP_INPUT_HW,
    rnip: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """The NIP (or RNIP) descriptor of one image.

    Args:
        img: uint8 (H, W, 3) RGB image, upright (`chipq.images.load_image`).
        features: batch (N, 3, H, W) uint8 RGB -> float32 (N, C, h, w) feature maps.
        size: (height, width) of the network input.
        rnip: None for NIP, or 5 / 9 / 14 for RNIP (`chipq.retrieval.rois.rnip_crops`).
        batch_size: most inputs per call of `features`.

    Returns:
        float32 (C,), L2-normalised unless every pooled value is zero.
    """
    check_rgb(img)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if rnip is None:
        crops = [Box(0, 0, img.shape[1], img.shape[0])]
        reduce_map = nip_rotation_vector
    else:
        crops = rnip_crops(img.shape[1], img.shape[0], rnip)
        reduce_map = whole_map_pool
    inputs = [
        net_input
        for box in crops
        for net_input in rotated_inputs(img[box.y : box.y + box.h, box.x : box.x + box.w], size)
    ]
    vectors = _map_vectors(inputs, features, reduce_map, batch_size)
    per_crop = vectors.reshape(len(crops), len(ROTATIONS), -1)
    return finish(per_crop.mean(axis=0))


def _map_vectors(
    inputs: list[np.ndarray],
    features: FeatureFn,
    reduce_map: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
) -> np.ndarray:
    """Run the inputs through `features` in chunks and reduce each map to a vector: (N, C)."""
    vectors = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        batch = np.ascontiguousarray(np.stack(chunk).transpose(0, 3, 1, 2))  # NHWC -> NCHW
        maps = np.asarray(features(batch))
        if maps.ndim != 4 or maps.shape[0] != len(chunk):
            raise ValueError(
                f"the feature function returned shape {maps.shape} for a batch of {len(chunk)} "
                "inputs; expected (N, C, h, w)"
            )
        vectors.extend(reduce_map(fmap) for fmap in maps)
    return np.stack(vectors)


class NoImageUsable(ChipqError):
    """Every image of the run was skipped: there is nothing to write (exit code 2)."""


def images_sha256(names: Sequence[str], paths: Sequence[Path]) -> str:
    """SHA-256 over every image's name and the SHA-256 of its bytes: a run's image set, by content.

    A file that cannot be read as a regular file (missing, a FIFO) counts by its name and the
    reason, so hashing never blocks; it is skipped later when it is decoded.
    """
    digest = hashlib.sha256()
    for name, path in zip(names, paths):
        try:
            with open_regular(path, "image") as handle:
                content = hashlib.sha256()
                for block in iter(lambda: handle.read(1 << 20), b""):
                    content.update(block)
                token = content.hexdigest()
        except (FileRefused, OSError) as exc:
            token = f"unreadable: {exc}"
        # surrogateescape: a file name that is not valid UTF-8 hashes by its bytes (valid names hash as before)
        digest.update(f"{name}\0{token}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def run_metadata(*, model: str, rnip: int | None, size: tuple[int, int], **extra) -> dict:
    """The metadata a descriptor file records about the run that made it (JSON-ready).

    It is also what a checkpoint must match to be resumed (`DescriptorStore`): callers pass the
    content hashes of the blob or model and of the images (`images_sha256`) in `extra`.
    """
    return {"model": model, "rnip": rnip, "size": list(size), "chipq_version": __version__, **extra}


@dataclass
class DescribeSummary:
    """What a run did: images described now, taken from a checkpoint, and skipped.

    The one summary of an extraction: `describe_all` returns it, and a Ray run gives the same
    (`chipq.retrieval.distributed.ShardPlan.summary`).
    """

    described: int = 0
    resumed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)


def describe_all(
    images: Sequence[tuple[str, Path]],
    features: FeatureFn,
    store: DescriptorStore,
    *,
    size: tuple[int, int] = C.CHIP_INPUT_HW,
    rnip: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_image: Callable[[str], None] | None = None,
) -> DescribeSummary:
    """Describe every image `store` does not hold yet, in order; skip the undecodable ones.

    Args:
        images: (name, path) pairs; the names are `store.order`.
        features: as for `describe`.
        store: receives each descriptor and checkpoints; the caller calls `store.finish()`.
        size: network input (height, width).
        rnip: None for NIP, or 5 / 9 / 14.
        batch_size: most inputs per call of `features`.
        on_image: called with each name once it is done or skipped (a progress bar).

    Returns:
        The counts, and the name and reason of every skipped image.
    """
    summary = DescribeSummary(resumed=store.resumed)
    pending = set(store.pending)
    for name, path in images:
        if name not in pending:
            continue
        try:
            img = load_image(path)
        except ImageError as exc:
            summary.skipped.append((name, str(exc)))
        else:
            store.add(name, describe(img, features, size=size, rnip=rnip, batch_size=batch_size))
            summary.described += 1
        if on_image is not None:
            on_image(name)
    return summary
