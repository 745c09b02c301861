"""Integer executors of chip format v1 and v2: `golden` defines the arithmetic, `fast` is what users run.

Both stand behind one interface, `Executor`: built from a `ChipModel`, ``run(pixels, taps=False)``
takes uint8 (N, 3, H, W) pixels and returns the last layer's uint8 (N, C, h, w) map, or with `taps`
a list of every layer's; ``route_label`` says how it computes (for reports).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Executor(Protocol):
    """What `chipq.executor.golden.GoldenExecutor` and `chipq.executor.fast.FastExecutor` share."""

    route_label: str

    def run(self, pixels: np.ndarray, taps: bool = False): ...
