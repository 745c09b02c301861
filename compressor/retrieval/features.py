"""Feature functions for `chipq.retrieval.describe`: the chip model (integer executor) or the float model.

Both take a uint8 (N, 3, H, W) RGB batch and return float32 (N, C, h, w) maps of the last conv
layer in real units, so descriptors from either are comparable.
"""

from __future__ import annotations

import numpy as np

from chipq.executor.fast import FastExecutor
from chipq.floatnet.model import FloatStack
from chipq.floatnet.reference import FloatReference
from chipq.formats.model import ChipModel
from chipq.retrieval.describe import FeatureFn


def chip_features(model: ChipModel, batch: int = 8) -> FeatureFn:
    """The fast integer executor, its uint8 output scaled by ``2**-f`` (SPEC 4.4)."""
    executor = FastExecutor(model, batch=batch)
    scale = np.float32(2.0 ** -model.activation_fracs()[-1])
    return lambda pixels: executor.run(pixels).astype(np.float32) * scale


def float_features(stack: FloatStack, batch: int = 8) -> FeatureFn:
    """The float model's last conv map (after ReLU)."""
    reference = FloatReference(stack.without_trailing_pool(), batch=batch)
    return reference.run
