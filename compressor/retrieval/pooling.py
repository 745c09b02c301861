"""NIP and RNIP pooling of feature maps into one descriptor (host side, float).

A feature map is a float array (C, h, w), one per network input. The order of operations is the
same for both methods:

1. ROI pooling: square-root pooling ``sqrt(mean(x²))`` per channel over the ROI's cells;
2. average over the ROIs of one rotation;
3. max over the rotations, per channel;
4. L2 normalisation (an all-zero vector stays zero).

NIP: one map per rotation of the image; the ROIs are the R-MAC regions of the map with
`NIP_LEVELS` = 3 levels (`chipq.retrieval.rois.rmac_regions`, 14 on a square map). RNIP: one map per crop and
rotation; each crop's map is pooled over its whole extent (the crop is the ROI), so step 2 averages
over the crops.

Arithmetic is float64; descriptors are returned as float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chipq.retrieval.rois import Box, rmac_regions

NIP_LEVELS = 3


def roi_pool(fmap: np.ndarray, box: Box) -> np.ndarray:
    """Square-root pooling of one ROI: per channel, sqrt of the mean square over the ROI's cells.

    Args:
        fmap: (C, h, w) feature map.
        box: the ROI in map cells.

    Returns:
        float64 (C,).
    """
    cells = np.asarray(fmap[:, box.y : box.y + box.h, box.x : box.x + box.w], dtype=np.float64)
    if cells.shape[1:] != (box.h, box.w):
        raise ValueError(f"ROI {tuple(box)} does not fit a map of {fmap.shape[2]}x{fmap.shape[1]} cells")
    return np.sqrt(np.mean(np.square(cells), axis=(1, 2)))


def whole_map_pool(fmap: np.ndarray) -> np.ndarray:
    """`roi_pool` over the whole map (the RNIP ROI)."""
    _check_map(fmap)
    return roi_pool(fmap, Box(0, 0, fmap.shape[2], fmap.shape[1]))


def nip_rotation_vector(fmap: np.ndarray) -> np.ndarray:
    """Steps 1-2 of NIP for one map: the mean of its R-MAC ROI vectors, float64 (C,)."""
    _check_map(fmap)
    regions = rmac_regions(fmap.shape[2], fmap.shape[1], NIP_LEVELS)
    return np.mean([roi_pool(fmap, box) for box in regions], axis=0)


def finish(per_rotation: np.ndarray) -> np.ndarray:
    """Steps 3-4: max over rotations (axis 0), then L2 normalise; float32 (C,)."""
    per_rotation = np.asarray(per_rotation, dtype=np.float64)
    if per_rotation.ndim != 2 or per_rotation.shape[0] < 1:
        raise ValueError(f"expected (rotations, C) vectors, got shape {per_rotation.shape}")
    vector = per_rotation.max(axis=0)
    norm = float(np.linalg.norm(vector))
    if norm > 0:
        vector = vector / norm
    return vector.astype(np.float32)


def nip_from_maps(maps_per_rotation: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """The NIP descriptor of one image from the feature maps of its rotations.

    Args:
        maps_per_rotation: one (C, h, w) map per rotation, as a sequence or an (R, C, h, w) array;
            the maps may differ in shape (a non-square map turned by 90°), not in C.

    Returns:
        float32 (C,), unit length unless every value is zero.
    """
    _check_nonempty(maps_per_rotation, "rotations")
    return finish(np.stack([nip_rotation_vector(fmap) for fmap in maps_per_rotation]))


def pool_crops(maps_per_crop_per_rotation: Sequence[Sequence[np.ndarray]] | np.ndarray) -> np.ndarray:
    """The RNIP descriptor of one image from the feature maps of its crops' rotations.

    Args:
        maps_per_crop_per_rotation: indexed [crop][rotation] -> (C, h, w) map; a sequence of
            sequences or a (K, R, C, h, w) array. Every crop has the same rotations.

    Returns:
        float32 (C,), unit length unless every value is zero.
    """
    _check_nonempty(maps_per_crop_per_rotation, "crops")
    vectors = np.stack(
        [np.stack([whole_map_pool(fmap) for fmap in crop]) for crop in maps_per_crop_per_rotation]
    )  # (K, R, C)
    return finish(vectors.mean(axis=0))


def _check_map(fmap: np.ndarray) -> None:
    if getattr(fmap, "ndim", None) != 3 or 0 in fmap.shape:
        raise ValueError(f"expected a (C, h, w) feature map, got shape {getattr(fmap, 'shape', None)}")


def _check_nonempty(items, what: str) -> None:
    if len(items) == 0:
        raise ValueError(f"no {what} to pool")
