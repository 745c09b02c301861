"""The float forward of a `FloatStack` as a torch module (float32, eval mode)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from chipq.floatnet.model import FloatConv, FloatStack


class StackNet(nn.Module):
    """The float forward of a `FloatStack`: NCHW float32 input, already normalised.

    Modules are keyed by layer name (``layers.conv1_1.weight``); pools have no parameters.
    """

    def __init__(self, stack: FloatStack) -> None:
        super().__init__()
        self.layers = nn.ModuleDict()
        for layer in stack.layers:
            if isinstance(layer, FloatConv):
                conv = nn.Conv2d(layer.in_channels, layer.out_channels, kernel_size=3, padding=1)
                conv.weight = nn.Parameter(torch.from_numpy(np.array(layer.weight, dtype=np.float32)))
                conv.bias = nn.Parameter(torch.from_numpy(np.array(layer.bias, dtype=np.float32)))
                self.layers[layer.name] = conv
            else:
                self.layers[layer.name] = nn.MaxPool2d(kernel_size=2, stride=2)

    def outputs(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, output) of every layer in order, a conv's after its ReLU: the one float forward
        rule; each map can be dropped before the next is made."""
        for name, module in self.layers.items():
            # the ReLU in place on the conv's fresh output: the same values, one map fewer made
            x = F.relu(module(x), inplace=True) if isinstance(module, nn.Conv2d) else module(x)
            yield name, x

    def forward(self, x: torch.Tensor, until: str | None = None) -> torch.Tensor:
        """The last layer's output, or that of layer `until` (later layers are not run)."""
        for name, x in self.outputs(x):
            if name == until:
                break
        return x

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's output (a conv's after its ReLU), by layer name, in order."""
        return dict(self.outputs(x))


def stack_to_torch(stack: FloatStack) -> StackNet:
    """A torch module running `stack` in float32, in eval mode (input already normalised)."""
    return StackNet(stack).eval()
