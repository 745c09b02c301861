"""A real pruned chip model for the v2 hand-off checks: kernels pruned by |alpha|, 5-bit alpha codes.

Not a good compression (no refit, no retraining): a model whose layers have real weights, real
activations and about half their kernels pruned, so that the C model and the RTL engine are checked on
a pruned layer of real data. The compressor's own pruning lives in the pipeline.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer


def prune_layer(layer: ConvLayer, keep: float = 0.5, alpha_bits: int = 5) -> ConvLayer:
    """`layer` with its smallest-|alpha| kernels pruned (a `keep` share stays) and `alpha_bits`-bit alpha.

    Alpha is rounded to the nearest multiple of ``alpha_step(alpha_bits)`` (at least one step, at most
    the largest code's value) so a kept kernel keeps a nonzero scale; a pruned kernel gets alpha 0 and
    mask 0, as SPEC 3.5 requires.
    """
    step = C.alpha_step(alpha_bits)
    flat = layer.alpha.reshape(-1).astype(np.int64)
    kept = max(1, round(keep * flat.size))
    order = np.argsort(-flat, kind="stable")  # largest alpha first; ties by kernel index
    present = np.zeros(flat.size, dtype=bool)
    present[order[:kept]] = True
    present = present.reshape(layer.alpha.shape)
    top = ((1 << alpha_bits) - 1) * step
    rounded = np.clip((layer.alpha.astype(np.int64) + step // 2) // step * step, step, top)
    alpha = np.where(present, rounded, 0).astype(np.uint8)
    mask = np.where(present[:, :, None, None], layer.mask, 0).astype(np.uint8)
    return replace(layer, alpha=alpha, mask=mask, alpha_bits=alpha_bits, present=present)


def prune_model(model: ChipModel, keep: float = 0.5, alpha_bits: int = 5) -> ChipModel:
    """Every conv of `model` through `prune_layer`."""
    layers = tuple(prune_layer(layer, keep, alpha_bits) if isinstance(layer, ConvLayer) else layer for layer in model.layers)
    return replace(model, layers=layers)
