"""The start-up self-test that admits the fast executor's int8 route on this CPU and PyTorch build.

It runs small random models (every mask width; the first layer on both of its paths; one chip format
v2 model with narrow alphas and absent kernels) on the int8 route and requires every output equal to the golden executor's. The models come from
`chipq.formats.synthetic`, the seeded generator of valid chip models whose bounds the writer proves:
it is production code (shipped, deterministic), which the test suite happens to use too.
"""

from __future__ import annotations

import numpy as np

from chipq.executor import golden
from chipq.formats.synthetic import random_model

CASES = ([1, 3, 5], [5, 2, 4], [3, 1, 2])  # mask widths of the three test models
# a chip format v2 model too: narrow alphas and absent kernels (zero weights), a layer with no kernel
V2_ALPHA_BITS, V2_KEEP = [3, 8, 1], [0.5, 0.3, 0.0]


def int8_matches_golden(cap: int) -> bool:
    """True when the int8 route with int8 weights within ±`cap` equals golden on every case."""
    from chipq.executor.fast import FastExecutor

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 9, 7), dtype=np.uint8)
    images[0, :, :4] = 255
    models = [random_model(bits, [6, 16, "M", 8], input_hw=(9, 7), seed=seed) for seed, bits in enumerate(CASES)]
    models.append(
        random_model(CASES[0], [6, 16, "M", 8], input_hw=(9, 7), seed=len(CASES), alpha_bits=V2_ALPHA_BITS, keep=V2_KEEP)
    )
    for model in models:
        got = FastExecutor.with_cap(model, cap).run(images)
        if not np.array_equal(got, golden.GoldenExecutor(model).run(images)):
            return False
    return True
