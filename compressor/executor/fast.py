"""The fast executor: the golden executor's arithmetic, batched, on float BLAS where it is exact.

Why float is exact here: every value on the chip path is an integer, and float32 holds every integer
up to 2^24 exactly. For each conv, `channel_groups` splits the input channels into contiguous groups
such that, for every output channel, (largest input) x (sum of |W| over the group) < 2^24: then every
partial sum of that group's float32 convolution is an exact integer whatever order the BLAS adds in.
The groups' results are added in int32, which cannot overflow because SPEC 4.5 makes the writer and
the reader prove |accumulator| < 2^31 for the whole sum, bias and rounding term included. Bias,
rounding, the arithmetic right shift, ReLU and saturation then run on int32 exactly as in SPEC 4.2.
The groups cost no extra multiply-adds: they split one GEMM into a few narrower ones.

A layer in which a single input channel could already leave float32's exact range runs as one
float64 convolution (exact below 2^53). Either way the result is tested equal, element for element,
to `golden.run`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..formats import constants as C
from ..formats.bounds import largest_input
from ..formats.model import ChipModel, ConvLayer, PoolLayer

FLOAT32_EXACT = 1 << 24  # every integer of magnitude up to 2^24 is a float32
DEFAULT_BATCH = 8


def channel_groups(layer: ConvLayer, peak_input: int, limit: int = FLOAT32_EXACT) -> list[tuple[int, int]]:
    """Split the input channels into contiguous groups whose partial sums float32 holds exactly.

    A group [a, b) qualifies when, for every output channel o, ``peak_input * sum_{i in [a, b)}
    sum_k |W[o, i, k]| < limit``: then every partial sum of that group's convolution is an integer
    below 2^24 whatever order the BLAS adds in. Greedy from the first channel.

    Raises:
        ValueError: a single input channel already exceeds the limit (then use float64).
    """
    column = np.abs(layer.int_weights().astype(np.int64)).sum(axis=(2, 3)) * peak_input  # (O, I)
    groups, start = [], 0
    running = np.zeros(column.shape[0], dtype=np.int64)
    for index in range(column.shape[1]):
        if int(column[:, index].max()) >= limit:
            raise ValueError(f"layer {layer.name}: input channel {index} alone exceeds {limit}")
        if int((running + column[:, index]).max()) >= limit:
            groups.append((start, index))
            start, running = index, np.zeros_like(running)
        running += column[:, index]
    groups.append((start, column.shape[1]))
    return groups


class _Conv:
    """One conv layer prepared for the fast path.

    The accumulator is the sum, in int32, of float32 convolutions over channel groups that are each
    exact (`channel_groups`); a layer whose single channel could already leave float32's exact range
    runs as one float64 convolution instead (exact below 2^53, SPEC 4.5).
    """

    def __init__(self, layer: ConvLayer, peak_input: int) -> None:
        self.layer = layer
        weight = torch.from_numpy(layer.int_weights().astype(np.float32))
        try:
            self.groups = channel_groups(layer, peak_input)
            self.weights = [weight[:, a:b].contiguous() for a, b in self.groups]
            self.dtype = torch.float32
        except ValueError:
            self.groups = [(0, layer.in_channels)]
            self.weights = [weight.to(torch.float64)]
            self.dtype = torch.float64
        bias = layer.bias.astype(np.int64) << layer.bias_shift
        rounding = (1 << (layer.out_shift - 1)) if layer.out_shift > 0 else 0
        # bias and the rounding term, pre-added: |bias| + rounding is inside the proven bound
        self.offset = torch.from_numpy((bias + rounding).astype(np.int32)).reshape(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        acc = None
        for (a, b), weight in zip(self.groups, self.weights):
            part = F.conv2d(x[:, a:b].to(self.dtype), weight, padding=1).to(torch.int32)
            acc = part if acc is None else acc.add_(part)
        acc = acc.add_(self.offset)
        if self.layer.out_shift > 0:
            acc = acc.bitwise_right_shift_(self.layer.out_shift)  # arithmetic: floor for negatives
        return acc.clamp_(0, C.ACT_MAX).to(torch.float32)


class FastExecutor:
    """Runs a chip model on batches of images, bit-exact with `golden.run`.

    Args:
        model: the chip model.
        batch: images per forward pass (bounds memory at large inputs).
    """

    def __init__(self, model: ChipModel, batch: int = DEFAULT_BATCH) -> None:
        self.model = model
        self.batch = max(1, int(batch))
        self.steps: list[_Conv | None] = [
            _Conv(layer, largest_input(model, index)) if isinstance(layer, ConvLayer) else None
            for index, layer in enumerate(model.layers)
        ]
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
