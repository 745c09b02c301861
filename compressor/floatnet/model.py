"""The float conv stack every importer produces and the quantizer consumes.

A `FloatStack` is a plain chain of 3x3 convs (stride 1, pad 1, each followed by ReLU) and 2x2
max-pools, with float32 numpy weights and the input normalisation the model was trained with.
Names follow VGG: ``conv<block>_<index>`` and ``pool<block>``, blocks counted by pools.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(eq=False)
class FloatConv:
    """A float 3x3 conv + ReLU: weight (out, in, 3, 3) float32, bias (out,) float32."""

    name: str
    weight: np.ndarray
    bias: np.ndarray

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])


@dataclass(eq=False)
class FloatPool:
    """A 2x2 max-pool, stride 2."""

    name: str


@dataclass(eq=False)
class FloatStack:
    """A float conv/ReLU/max-pool chain and its input normalisation.

    The model takes RGB images with values in [0, 1], normalised as ``(x - mean) / std``.
    """

    layers: list[FloatConv | FloatPool]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    source: str = field(default="")

    def conv_layers(self) -> list[FloatConv]:
        return [layer for layer in self.layers if isinstance(layer, FloatConv)]

    def weights_sha256(self) -> str:
        """SHA-256 over every conv's name, weights and bias: the model's identity, whatever its file."""
        digest = hashlib.sha256()
        for conv in self.conv_layers():
            digest.update(conv.name.encode())
            digest.update(np.ascontiguousarray(conv.weight, np.float32).tobytes())
            digest.update(np.ascontiguousarray(conv.bias, np.float32).tobytes())
        return digest.hexdigest()

    def without_trailing_pool(self) -> "FloatStack":
        """The chain up to its last conv: retrieval pools the last conv map (SPEC.md 6)."""
        layers = list(self.layers)
        while layers and isinstance(layers[-1], FloatPool):
            layers.pop()
        return FloatStack(layers, self.mean, self.std, self.source)


def vgg_names(kinds: list[str]) -> list[str]:
    """VGG names for a chain given as 'conv'/'pool' kinds.

    >>> vgg_names(["conv", "conv", "pool", "conv", "pool"])
    ['conv1_1', 'conv1_2', 'pool1', 'conv2_1', 'pool2']
    """
    names, block, index = [], 1, 0
    for kind in kinds:
        if kind == "conv":
            index += 1
            names.append(f"conv{block}_{index}")
        else:
            names.append(f"pool{block}")
            block, index = block + 1, 0
    return names
