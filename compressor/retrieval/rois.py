"""Regions of interest: R-MAC sampling (Tolias, Sicre, Jégou, ICLR 2016) and the RNIP crops.

R-MAC regions of a W x H rectangle (an image in pixels or a feature map in cells), levels 1..L:

- Level l has square regions of side ``s_l = floor(2·min(W, H) / (l + 1))`` (at least 1), so level 1
  is the largest square that fits.
- Along the short side there are ``l`` regions; along the long side ``l + m − 1``, where m, the
  number of level-1 regions along the long side, is 1 for a square and otherwise the m in 2..7
  whose consecutive level-1 squares overlap closest to 40 %: with side ``s = min(W, H)`` and step
  ``(max(W, H) − s) / (m − 1)`` the overlap is ``1 − step / s``; ties go to the smaller m. For very
  elongated shapes even m = 7 leaves gaps; that is R-MAC's rule, kept as is.
- n regions of side s along a length D start at ``floor(k·(D − s) / (n − 1))``, k = 0..n−1 (integer
  arithmetic): the first touches the start, the last the end, the rest are evenly spread.

A square has 1 + 4 + 9 = 14 regions for L = 3. A 640x480 image has m = 2, so 2 + 6 = 8 regions for
L = 2 and 2 + 6 + 12 = 20 for L = 3.

RNIP crops (`rnip_crops`): the R-MAC regions of the input image up to level L, plus the whole image
when it is not itself a region (it is one only for a square). ``--rnip N`` picks L: 5 and 9 mean
L = 2, 14 means L = 3. The names are the counts the paper quotes: 5 crops for a square image at
L = 2, 9 for a 4:3 image at L = 2 (2 + 6 regions + the whole image), 14 for a square at L = 3.
The actual number follows from the aspect ratio (a 4:3 image at L = 3 has 21) and is reported by
`rnip_count`; ``--rnip 5`` and ``--rnip 9`` are therefore the same setting.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

from chipq.errors import ChipqError


class UnknownRnipCount(ChipqError):
    """An RNIP crop count other than the three the paper defines (5, 9, 14)."""


TARGET_OVERLAP = Fraction(2, 5)  # R-MAC: consecutive level-1 regions overlap about 40 %
LONG_SIDE_STEPS = range(2, 8)  # candidates for m on a non-square rectangle
RNIP_LEVELS = {5: 2, 9: 2, 14: 3}  # --rnip N -> R-MAC levels L


class Box(NamedTuple):
    """A rectangle of pixels or cells: columns x..x+w−1, rows y..y+h−1."""

    x: int
    y: int
    w: int
    h: int


def long_side_regions(width: int, height: int) -> int:
    """m: how many level-1 regions R-MAC puts along the long side.

    >>> long_side_regions(480, 480), long_side_regions(640, 480), long_side_regions(480, 1200)
    (1, 2, 4)
    """
    _check_extent(width, height)
    short, long = min(width, height), max(width, height)
    if short == long:
        return 1

    def distance(m: int) -> Fraction:
        step = Fraction(long - short, m - 1)
        return abs(1 - step / short - TARGET_OVERLAP)

    return min(LONG_SIDE_STEPS, key=distance)  # min keeps the first (smaller m) on a tie


def rmac_regions(width: int, height: int, levels: int) -> list[Box]:
    """The R-MAC regions of a width x height rectangle, level by level, each level row-major.

    Args:
        width: columns of the image or map.
        height: rows of the image or map.
        levels: L, at least 1.

    Returns:
        The square regions (module docstring), level 1 first.
    """
    _check_extent(width, height)
    if levels < 1:
        raise ValueError(f"R-MAC levels must be at least 1, got {levels}")
    m = long_side_regions(width, height)
    boxes = []
    for level in range(1, levels + 1):
        side = max(1, 2 * min(width, height) // (level + 1))
        count_x = level + m - 1 if width > height else level
        count_y = level + m - 1 if height > width else level
        for y in _starts(height, side, count_y):
            for x in _starts(width, side, count_x):
                boxes.append(Box(x, y, side, side))
    return boxes


def _starts(length: int, side: int, count: int) -> list[int]:
    if count == 1:
        return [(length - side) // 2]
    return [k * (length - side) // (count - 1) for k in range(count)]


def rnip_levels(n: int) -> int:
    """The R-MAC levels behind ``--rnip n``.

    Raises:
        UnknownRnipCount: n is not one of 5, 9, 14.
    """
    if n not in RNIP_LEVELS:
        raise UnknownRnipCount(f"--rnip {n}: must be one of {', '.join(map(str, sorted(RNIP_LEVELS)))}")
    return RNIP_LEVELS[n]


def rnip_crops(width: int, height: int, n: int) -> list[Box]:
    """The crops RNIP cuts from a width x height image for ``--rnip n``.

    The whole image first when it is not an R-MAC region, then the regions up to level
    `rnip_levels(n)` in `rmac_regions` order.

    >>> len(rnip_crops(224, 224, 5)), len(rnip_crops(640, 480, 9)), len(rnip_crops(300, 300, 14))
    (5, 9, 14)
    """
    regions = rmac_regions(width, height, rnip_levels(n))
    whole = Box(0, 0, width, height)
    return regions if whole in regions else [whole] + regions


def rnip_count(width: int, height: int, n: int) -> int:
    """How many crops ``--rnip n`` gives for a width x height image (see the module docstring)."""
    return len(rnip_crops(width, height, n))


def _check_extent(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"region sampling needs a non-empty rectangle, got {width}x{height}")
