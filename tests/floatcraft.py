"""The one builder of small random float models for tests (He-scaled weights, VGG layer names)."""

from __future__ import annotations

import numpy as np

from chipq.floatnet.model import FloatConv, FloatPool, FloatStack, vgg_names


def random_stack(cfg: list, *, seed: int = 0, bias_std: float = 0.1, in_channels: int = 3) -> FloatStack:
    """A `FloatStack` laid out like a VGG configuration list: output channels per conv, "M" per pool.

    >>> [layer.name for layer in random_stack([4, "M", 8]).layers]
    ['conv1_1', 'pool1', 'conv2_1']

    Weights are N(0, 2 / (9 * in)) (He), biases N(0, bias_std), drawn layer by layer from `seed`.
    """
    rng = np.random.default_rng(seed)
    kinds = ["pool" if value == "M" else "conv" for value in cfg]
    layers: list[FloatConv | FloatPool] = []
    for name, value in zip(vgg_names(kinds), cfg):
        if value == "M":
            layers.append(FloatPool(name))
            continue
        weight = rng.normal(size=(value, in_channels, 3, 3)) * np.sqrt(2 / (9 * in_channels))
        bias = rng.normal(size=value) * bias_std
        layers.append(FloatConv(name, weight.astype(np.float32), bias.astype(np.float32)))
        in_channels = value
    return FloatStack(layers)
