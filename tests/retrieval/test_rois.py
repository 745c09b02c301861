"""R-MAC regions and RNIP crops (chipq.retrieval.rois)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chipq.retrieval.rois import Box, UnknownRnipCount, long_side_regions, rmac_regions, rnip_count, rnip_crops


def test_square_counts_and_layout():
    regions = rmac_regions(300, 300, 3)
    assert len(regions) == 1 + 4 + 9
    assert regions[0] == Box(0, 0, 300, 300)
    # level 2: side floor(600/3) = 200 at 0 and 100; level 3: side 150 at 0, 75, 150
    assert regions[1:5] == [Box(x, y, 200, 200) for y in (0, 100) for x in (0, 100)]
    assert [b.x for b in regions[5:8]] == [0, 75, 150] and {b.w for b in regions[5:]} == {150}


def test_640x480_counts_and_layout():
    # m = 2: level-1 squares of 480 at x = 0 and 160 overlap by 2/3, closer to 40 % than m = 3 (5/6)
    assert long_side_regions(640, 480) == 2
    level2 = rmac_regions(640, 480, 2)
    assert len(level2) == 2 + 6
    assert level2[:2] == [Box(0, 0, 480, 480), Box(160, 0, 480, 480)]
    assert level2[2:] == [Box(x, y, 320, 320) for y in (0, 160) for x in (0, 160, 320)]
    assert len(rmac_regions(640, 480, 3)) == 2 + 6 + 12
    # portrait is the transpose
    assert sorted(rmac_regions(480, 640, 2)) == sorted(Box(b.y, b.x, b.h, b.w) for b in level2)


def test_overlap_rule_picks_closest_to_40_percent():
    # 480 x 1200: step 720/(m-1); overlaps 1 - step/480: m=3 -> 0.25, m=4 -> 0.5; 0.5 is closer
    assert long_side_regions(480, 1200) == 4
    # 1000 x 480: m=2 -> -0.083, m=3 -> 0.458, m=4 -> 0.639: m = 3
    assert long_side_regions(1000, 480) == 3
    # extreme aspect ratio: capped at 7 even though the squares no longer touch
    assert long_side_regions(100, 5000) == 7


def test_rnip_counts_from_design():
    assert rnip_count(224, 224, 5) == 5
    assert rnip_count(224, 224, 14) == 14
    assert rnip_count(640, 480, 9) == 9
    assert rnip_count(640, 480, 5) == 9  # 5 and 9 are the same setting (L = 2)
    assert rnip_count(224, 224, 9) == 5
    assert rnip_count(640, 480, 14) == 21
    crops = rnip_crops(640, 480, 9)
    assert crops[0] == Box(0, 0, 640, 480) and crops[1:] == rmac_regions(640, 480, 2)
    assert rnip_crops(224, 224, 14) == rmac_regions(224, 224, 3)  # the whole image is region 1


def test_rnip_refuses_other_counts():
    with pytest.raises(UnknownRnipCount, match="--rnip 7"):
        rnip_crops(640, 480, 7)


def test_tiny_maps_still_get_regions():
    assert rmac_regions(1, 1, 3) == [Box(0, 0, 1, 1)] * 14
    assert {b.w for b in rmac_regions(2, 2, 3)} == {2, 1}


@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(1, 4))
def test_region_invariants(width, height, levels):
    """Every region is a square of the level's side inside the rectangle; level l has l x (l+m-1)
    regions; on each level the regions reach both ends of each side."""
    m = long_side_regions(width, height)
    regions = rmac_regions(width, height, levels)
    start = 0
    for level in range(1, levels + 1):
        count = level * (level + m - 1)
        group = regions[start : start + count]
        start += count
        side = max(1, 2 * min(width, height) // (level + 1))
        assert all(b.w == b.h == side for b in group)
        assert all(0 <= b.x and b.x + b.w <= width and 0 <= b.y and b.y + b.h <= height for b in group)
        assert min(b.x for b in group) == 0 and max(b.x + b.w for b in group) == width
        assert min(b.y for b in group) == 0 and max(b.y + b.h for b in group) == height
    assert start == len(regions)
