"""The fast executor: the golden executor's arithmetic, batched, on float BLAS where it is exact.

Why float is exact here: every value on the chip path is an integer. SPEC 4.5 makes the writer (and
the reader) prove that every partial sum of a conv, bias and rounding term included, stays below
2^31 in magnitude, and float64 represents every integer below 2^53 exactly, so a float64
convolution returns exactly the integer accumulator whatever order the BLAS adds in. The rounding
shift is a division by a power of two plus `floor`, also exact in float64.

float32 is exact only while every partial sum stays below 2^24. For each conv this module proves
that per output channel from the weights (sum of |W| times the largest input) and, where the proof
holds, runs the layer in float32, which is about three times faster. Either way the result is
tested equal, element for element, to `golden.run`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..formats import constants as C
from ..formats.model import ChipModel, ConvLayer, PoolLayer

FLOAT32_EXACT = 1 << 24  # every integer of magnitude up to 2^24 is a float32
DEFAULT_BATCH = 8


def input_peak(model: ChipModel) -> int:
    """The largest |x0| of SPEC 4.1 the first conv can see."""
    return max(max(m, C.ACT_MAX - m) for m in model.input_mean)


def layer_bound(layer: ConvLayer, peak_input: int) -> int:
    """SPEC 4.5's B (largest over output channels), in Python integers."""
    weights = np.abs(layer.int_weights().astype(np.int64)).sum(axis=(1, 2, 3))
    bias = np.abs(layer.bias.astype(np.int64)) << layer.bias_shift
    rounding = (1 << (layer.out_shift - 1)) if layer.out_shift > 0 else 0
    return int((bias + peak_input * weights).max(initial=0)) + rounding


class _Conv:
    """One conv layer prepared for the fast path: weights and bias as float tensors."""

    def __init__(self, layer: ConvLayer, peak_input: int) -> None:
        self.layer = layer
        exact32 = layer_bound(layer, peak_input) < FLOAT32_EXACT
        self.dtype = torch.float32 if exact32 else torch.float64
        self.weight = torch.from_numpy(layer.int_weights().astype(np.float64)).to(self.dtype)
        bias = layer.bias.astype(np.float64) * float(1 << layer.bias_shift)
        self.bias = torch.from_numpy(bias).to(self.dtype)
        self.half = float(1 << (layer.out_shift - 1)) if layer.out_shift > 0 else 0.0
        self.scale = float(1 << layer.out_shift)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        acc = F.conv2d(x.to(self.dtype), self.weight, self.bias, padding=1)
        if self.layer.out_shift > 0:
            acc = torch.floor((acc + self.half) / self.scale)
        return acc.clamp_(0, C.ACT_MAX)


class FastExecutor:
    """Runs a chip model on batches of images, bit-exact with `golden.run`.

    Args:
        model: the chip model.
        batch: images per forward pass (bounds memory at large inputs).
    """

    def __init__(self, model: ChipModel, batch: int = DEFAULT_BATCH) -> None:
        self.model = model
        self.batch = max(1, int(batch))
        peak = input_peak(model)
        self.steps: list[_Conv | None] = []
        for layer in model.layers:
            if isinstance(layer, ConvLayer):
                self.steps.append(_Conv(layer, peak))
                peak = C.ACT_MAX
            else:
                self.steps.append(None)
        self.mean = torch.tensor(model.input_mean, dtype=torch.float32).reshape(1, -1, 1, 1)

    def run(self, pixels: np.ndarray, taps: bool = False):
        """Run a batch.

        Args:
            pixels: uint8 (N, 3, H, W) in the model's channel order.
            taps: also return every layer's output.

        Returns:
            uint8 (N, C, h, w), the last layer's output; with `taps` a list of every layer's
            uint8 output (N, C_l, h_l, w_l).
        """
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1] != len(self.model.input_mean):
            raise ValueError(f"pixels must be uint8 (N, 3, H, W), got {pixels.dtype} {pixels.shape}")
        chunks = [self._run_chunk(pixels[i : i + self.batch], taps) for i in range(0, len(pixels), self.batch)]
        if taps:
            return [np.concatenate([chunk[k] for chunk in chunks]) for k in range(len(self.steps))]
        return np.concatenate(chunks)

    def _run_chunk(self, pixels: np.ndarray, taps: bool):
        outputs = []
        with torch.no_grad():
            x = torch.from_numpy(pixels).to(torch.float32) - self.mean
            for step in self.steps:
                x = step(x) if step is not None else F.max_pool2d(x, C.POOL_SIZE)
                if taps:
                    outputs.append(x.to(torch.uint8).numpy())
        return outputs if taps else x.to(torch.uint8).numpy()
