"""The fast executor's one skip of pruned kernels: output channels that keep no kernel are not computed.

Chip format v2 lets a conv layer drop kernels (SPEC 3.5); an absent kernel weighs zero, so every
route stays exact by running the dense weights, zeros included. Where a whole output channel has
lost every kernel its accumulator is only its bias and rounding term, the same at every pixel: its
output is the constant ``requantize(bias << bias_shift)`` (`golden.requantize`, SPEC 4.2). Such
channels are left out of the convolution and filled with that constant, which saves their share of
the layer's multiplies at the price of one more pass over the output map.

What was measured (real VGG-16 layers from the default blob, one thread, median of 9 to 15
interleaved runs, on a 2-core machine loaded 10-15 by other jobs: ratios, not timings). Pruned by
smallest |alpha| to 50 % and 30 % of their kernels, no layer has an input channel that no kernel
uses and any block of 16 outputs uses ~all inputs, so gathering inputs saves nothing; a sparse
(CSR) float matmul was ~4x slower than the dense float route and ~100x slower than the dense int8
one at 30 %. Skipping dead outputs (dense time / skipped time), int8 route: conv1_1 at 30 % of its
kernels (34 of 64 outputs dead) 2.63, at 50 % (20 of 64) 1.07-1.18; conv4_2 with 25 % of its
outputs dead 1.31-1.35, 37 % 0.84-1.16, 50 % 1.86; conv3_2 25 % 1.06, 50 % 1.41; conv2_2 25 % 1.09.
Float route: conv4_2 12 % 1.10, 25 % 1.29, 50 % 1.86-2.05; conv1_1 at 50 % of its kernels 1.02.
The whole network at 30 % of its kernels, where only conv1_1 has dead outputs: int8 route 1.02-1.06,
float route 0.96-0.98 (noise). Hence `MIN_DEAD_SHARE`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from chipq.executor import golden
from chipq.formats.model import ConvLayer

# Skip dead outputs only when at least this share of a layer's outputs is dead: the live outputs are
# copied into the full map once more, which fewer skipped channels do not repay (measured above).
MIN_DEAD_SHARE = 0.25


@dataclass(frozen=True)
class LiveSplit:
    """A layer's outputs split into those that keep a kernel and those that do not.

    Attributes:
        live_layer: the layer restricted to its live output channels (dense: no presence bitmap);
            None when no output keeps a kernel (then nothing is convolved at all).
        live: the live output channels (model indices), increasing.
        dead: the dead output channels (model indices), increasing.
        constants: uint8, the output value of each dead channel, in `dead` order.
    """

    live_layer: ConvLayer | None
    live: np.ndarray
    dead: np.ndarray
    constants: np.ndarray


def split_dead_outputs(layer: ConvLayer, min_share: float | None = None) -> LiveSplit | None:
    """The split of `layer` when at least `min_share` (default `MIN_DEAD_SHARE`) of its outputs keep
    no kernel, else None.

    A layer without a presence bitmap, or whose outputs all keep a kernel, gives None: nothing to skip.
    """
    if layer.present is None:
        return None
    min_share = MIN_DEAD_SHARE if min_share is None else min_share
    alive = layer.present.any(axis=1)
    dead = np.flatnonzero(~alive)
    if len(dead) == 0 or len(dead) < min_share * layer.out_channels:
        return None
    live = np.flatnonzero(alive)
    live_layer = None
    if len(live):
        live_layer = replace(layer, alpha=layer.alpha[live], mask=layer.mask[live], bias=layer.bias[live], present=None)
    acc = layer.bias[dead].astype(np.int64) << layer.bias_shift  # no kernel: bias alone (SPEC 4.2)
    return LiveSplit(live_layer, live, dead, golden.requantize(acc, layer.out_shift))


class SkipDeadOutputs:
    """A step computed on the live outputs only, the dead ones filled with their constant.

    Args:
        step: the route's step for `split.live_layer` (None when it is None: the input is then
            unpadded and only its batch and map size are used).
        split: from `split_dead_outputs`.
        step_order: the order (live-layer indices) in which `step` returns its channels (the int8
            route's ``out_order``); None for the float route, whose steps return them in order and
            whose layers then get all channels back in model order.
    """

    def __init__(self, step, split: LiveSplit, step_order: np.ndarray | None) -> None:
        self.step, self.split = step, split
        self.model_order = step_order is None
        channels = len(split.live) + len(split.dead)
        if self.model_order:
            self.out_order = np.arange(channels)
        else:  # the live channels as the step returns them, then the dead ones
            self.out_order = np.concatenate([split.live[step_order], split.dead])
        self.constants = torch.from_numpy(split.constants).reshape(1, -1, 1, 1)
        self.live = torch.from_numpy(split.live)
        self.dead = torch.from_numpy(split.dead)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.step is None:  # every output is a constant map of the input's size
            n, _, h, w = x.shape
            fill = self.constants.to(x.dtype).expand(n, -1, h, w)
            layout = torch.contiguous_format if self.model_order else torch.channels_last
            return fill.contiguous(memory_format=layout)
        y = self.step(x)
        n, live_count, h, w = y.shape
        if self.model_order:  # float route: NCHW, every channel at its model index
            out = y.new_empty((n, len(self.out_order), h, w))
            out.index_copy_(1, self.live, y)
            return out.index_copy_(1, self.dead, self.constants.to(y.dtype).expand(n, -1, h, w))
        # int8 route: channels-last, live channels first. Written into one NHWC buffer: 3-4x faster
        # than torch.cat of the live map and an expanded fill (measured on conv1_1's map).
        out = torch.empty((n, h, w, len(self.out_order)), dtype=y.dtype)
        out[..., :live_count] = y.permute(0, 2, 3, 1)
        out[..., live_count:] = self.constants.reshape(-1).to(y.dtype)
        return out.permute(0, 3, 1, 2)
