"""The start-up self-test that admits the fast executor's int8 route on this CPU and PyTorch build.

It runs small random models (every mask width; the first layer on both of its paths) on the int8
route and requires every output equal to the golden executor's. The models come from
`chipq.formats.synthetic`, the seeded generator of valid chip models whose bounds the writer proves:
it is production code (shipped, deterministic), which the test suite happens to use too.
"""

from __future__ import annotations

import numpy as np

from chipq.executor import golden
from chipq.formats.synthetic import random_model

CASES = ([1, 3, 5], [5, 2, 4], [3, 1, 2])  # mask widths of the three test models


def int8_matches_golden(cap: int) -> bool:
    """True when the int8 route with int8 weights within ±`cap` equals golden on every case."""
    from chipq.executor.fast import FastExecutor

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 9, 7), dtype=np.uint8)
    images[0, :, :4] = 255
    for seed, bits in enumerate(CASES):
        model = random_model(bits, [6, 16, "M", 8], input_hw=(9, 7), seed=seed)
        got = FastExecutor.with_cap(model, cap).run(images)
        if not np.array_equal(got, golden.GoldenExecutor(model).run(images)):
            return False
    return True
