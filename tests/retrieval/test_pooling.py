"""NIP / RNIP pooling against a plain-loop reference (chipq.retrieval.pooling)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipq.retrieval.pooling import nip_from_maps, nip_rotation_vector, pool_crops, roi_pool
from chipq.retrieval.rois import Box, rmac_regions


def _sqrt_pool_loop(fmap, box):
    """sqrt(mean(x^2)) per channel, element by element."""
    out = []
    for c in range(fmap.shape[0]):
        total = 0.0
        for y in range(box.y, box.y + box.h):
            for x in range(box.x, box.x + box.w):
                total += float(fmap[c, y, x]) ** 2
        out.append(math.sqrt(total / (box.w * box.h)))
    return out


def _normalise(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else v


def _nip_loop(maps):
    """ROI pooling -> mean over the R-MAC L=3 ROIs -> max over rotations -> L2, as plain loops."""
    per_rotation = []
    for fmap in maps:
        regions = rmac_regions(fmap.shape[2], fmap.shape[1], 3)
        pooled = [_sqrt_pool_loop(fmap, box) for box in regions]
        per_rotation.append([sum(p[c] for p in pooled) / len(pooled) for c in range(fmap.shape[0])])
    return _normalise([max(r[c] for r in per_rotation) for c in range(maps[0].shape[0])])


def _rnip_loop(maps):
    """maps[crop][rotation]: whole-map pooling -> mean over crops -> max over rotations -> L2."""
    crops, rotations, channels = len(maps), len(maps[0]), maps[0][0].shape[0]
    pooled = [[_sqrt_pool_loop(m, Box(0, 0, m.shape[2], m.shape[1])) for m in crop] for crop in maps]
    mean = [
        [sum(pooled[k][r][c] for k in range(crops)) / crops for c in range(channels)]
        for r in range(rotations)
    ]
    return _normalise([max(mean[r][c] for r in range(rotations)) for c in range(channels)])


def test_roi_pool_small_case():
    fmap = np.zeros((2, 3, 3), np.float32)
    fmap[0, 0, 0], fmap[0, 0, 1], fmap[1, 2, 2] = 3.0, 4.0, 1.0
    np.testing.assert_allclose(roi_pool(fmap, Box(0, 0, 2, 2)), [math.sqrt(25 / 4), 0.0])
    np.testing.assert_allclose(roi_pool(fmap, Box(1, 1, 2, 2)), [0.0, 0.5])
    with pytest.raises(ValueError, match="does not fit"):
        roi_pool(fmap, Box(2, 2, 2, 2))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_nip_matches_loop_reference(channels, height, width, seed):
    """nip_from_maps equals the loop reference on random ReLU maps, rotations of different shapes."""
    rng = np.random.default_rng(seed)
    base = np.maximum(rng.standard_normal((channels, height, width)), 0).astype(np.float32)
    maps = []
    for turns in range(4):  # different values per rotation, and non-square maps change shape
        turned = np.rot90(base, turns, axes=(1, 2))
        maps.append(turned + rng.random(turned.shape).astype(np.float32))
    got = nip_from_maps(maps)
    assert got.dtype == np.float32 and got.shape == (channels,)
    np.testing.assert_allclose(got, _nip_loop(maps), rtol=1e-6, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_rnip_matches_loop_reference(crops, rotations, channels, seed):
    """pool_crops equals the loop reference for any number of crops and rotations."""
    rng = np.random.default_rng(seed)
    maps = rng.random((crops, rotations, channels, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(pool_crops(maps), _rnip_loop(maps), rtol=1e-6, atol=1e-7)
    nested = [[maps[k, r] for r in range(rotations)] for k in range(crops)]
    np.testing.assert_array_equal(pool_crops(nested), pool_crops(maps))


def test_max_is_over_rotations_after_the_roi_average():
    # Channel 0 is strong in rotation 0 only, channel 1 in rotation 1 only: the max over rotations
    # keeps both; averaging over rotations (the wrong order) would halve them.
    maps = np.zeros((2, 2, 4, 4), np.float32)
    maps[0, 0] = 2.0
    maps[1, 1] = 2.0
    np.testing.assert_allclose(nip_from_maps(maps), [math.sqrt(0.5), math.sqrt(0.5)], rtol=1e-6)
    # RNIP averages over crops per rotation, then takes the max over rotations. Crop A: rotation 0
    # gives (4, 0), rotation 1 (0, 4); crop B: (0, 0) and (4, 0). Means (2, 0) and (2, 2), max
    # (2, 2). Max first, then mean, would give (4, 2).
    crops = np.zeros((2, 2, 2, 3, 3), np.float32)
    crops[0, 0, 0] = crops[0, 1, 1] = crops[1, 1, 0] = 4.0
    np.testing.assert_allclose(pool_crops(crops), [math.sqrt(0.5), math.sqrt(0.5)], rtol=1e-6)


def test_all_zero_maps_give_a_zero_vector():
    np.testing.assert_array_equal(nip_from_maps(np.zeros((4, 3, 2, 2), np.float32)), np.zeros(3))
    with pytest.raises(ValueError, match="no rotations"):
        nip_from_maps([])
    with pytest.raises(ValueError, match="feature map"):
        nip_from_maps([np.zeros((3, 4), np.float32)])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_torch_twin_equals_numpy_pooling(height, width, seed):
    """`pooling_torch.region_descriptors` is `nip_rotation_vector` L2-normalised, map by map."""
    import torch

    from chipq.retrieval.pooling_torch import region_descriptors

    maps = np.random.default_rng(seed).uniform(0, 4, size=(3, 5, height, width))
    got = region_descriptors(torch.from_numpy(maps)).numpy()
    for fmap, vector in zip(maps, got):
        want = nip_rotation_vector(fmap)
        np.testing.assert_allclose(vector, want / np.linalg.norm(want), rtol=1e-9, atol=1e-9)
