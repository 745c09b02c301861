"""The golden executor: SPEC.md section 4, one small function per operation, integers only.

It is written to be obviously right, not fast: int64 numpy arithmetic, a loop over the nine taps,
a check that every accumulator fits the spec's 32 bits. The fast executor is tested equal to it.
Tensors are one image, (C, H, W).
"""

from __future__ import annotations

import numpy as np

from chipq.errors import ChipqError
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer, PoolLayer


class AccumulatorOutOfRange(ChipqError):
    """An accumulator left the signed 32-bit range (a blob whose bound proof was wrong)."""

    exit_code = 1


def subtract_mean(pixels: np.ndarray, mean: tuple[int, ...]) -> np.ndarray:
    """SPEC 4.1: ``x0 = p - input_mean`` per plane, as int64 (range -255..255)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[0] != len(mean):
        raise ValueError(f"pixels must be uint8 (3, H, W), got {pixels.dtype} {pixels.shape}")
    return pixels.astype(np.int64) - np.asarray(mean, dtype=np.int64)[:, None, None]


def conv3x3_accumulate(x: np.ndarray, layer: ConvLayer) -> np.ndarray:
    """SPEC 4.2, first line: the int accumulator (O, H, W) of a 3x3 conv with zero padding 1."""
    channels, height, width = x.shape
    if channels != layer.in_channels:
        raise ValueError(f"layer {layer.name}: input has {channels} channels, expects {layer.in_channels}")
    weights = layer.int_weights().astype(np.int64)  # alpha * M, (O, I, 3, 3)
    padded = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1)))
    acc = np.zeros((layer.out_channels, height, width), dtype=np.int64)
    acc += (layer.bias.astype(np.int64) << layer.bias_shift)[:, None, None]
    for ky in range(C.KERNEL_SIZE):
        for kx in range(C.KERNEL_SIZE):
            window = padded[:, ky : ky + height, kx : kx + width]
            acc += np.tensordot(weights[:, :, ky, kx], window, axes=([1], [0]))
    return acc


def check_accumulator(acc: np.ndarray, layer: ConvLayer) -> int:
    """Refuse an accumulator outside signed 32 bits (SPEC 4.2: it must never happen).

    Returns:
        The largest |acc|.
    """
    peak = int(np.abs(acc).max(initial=0))
    if peak > C.ACC_MAX:
        raise AccumulatorOutOfRange(f"layer {layer.name}: |acc| reached {peak} > {C.ACC_MAX}")
    return peak


def requantize(acc: np.ndarray, out_shift: int) -> np.ndarray:
    """SPEC 4.2, rest: shift right rounding half up, then ReLU and saturation to uint8."""
    if out_shift > 0:
        acc = (acc + (1 << (out_shift - 1))) >> out_shift
    return np.clip(acc, 0, C.ACT_MAX).astype(np.uint8)


def maxpool2x2(x: np.ndarray) -> np.ndarray:
    """SPEC 4.3: 2x2 max-pool, stride 2, an odd last row or column dropped."""
    channels, height, width = x.shape
    h, w = height // C.POOL_SIZE, width // C.POOL_SIZE
    top = x[:, 0 : 2 * h : 2, 0 : 2 * w : 2]
    return np.maximum.reduce(
        [top, x[:, 0 : 2 * h : 2, 1 : 2 * w : 2], x[:, 1 : 2 * h : 2, 0 : 2 * w : 2], x[:, 1 : 2 * h : 2, 1 : 2 * w : 2]]
    )


class GoldenExecutor:
    """`run` behind the executors' common interface (`chipq.executor.Executor`): batches in.

    Args:
        model: the chip model.
    """

    route_label = "golden"

    def __init__(self, model: ChipModel) -> None:
        self.model = model

    def run(self, pixels: np.ndarray, taps: bool = False, peaks: list[int] | None = None):
        """Run a batch, one image at a time.

        Args:
            pixels: uint8 (N, 3, H, W) in the model's channel order.
            taps: also return every layer's output.
            peaks: when given, each image's largest |accumulator| per conv layer is appended to it.

        Returns:
            uint8 (N, C, h, w), or with `taps` a list of every layer's uint8 (N, C_l, h_l, w_l).
        """
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise ValueError(f"pixels must be uint8 (N, 3, H, W), got {pixels.dtype} {pixels.shape}")
        per_image = [run(self.model, image, taps=True, peaks=peaks) for image in pixels]
        stacked = [np.stack([outs[k] for outs in per_image]).astype(np.uint8) for k in range(len(self.model.layers))]
        return stacked if taps else stacked[-1]


def run(model: ChipModel, pixels: np.ndarray, *, taps: bool = False, peaks: list[int] | None = None):
    """Run one image through the model.

    Args:
        model: the chip model.
        pixels: uint8 (3, H, W) in the model's channel order.
        taps: return every layer's output, not just the last.
        peaks: when given, the largest |accumulator| of every conv layer is appended to it.

    Returns:
        The last layer's uint8 map (C, h, w), or a list with every layer's output when `taps`.
    """
    x = subtract_mean(pixels, model.input_mean)
    outputs = []
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            acc = conv3x3_accumulate(x, layer)
            peak = check_accumulator(acc, layer)
            if peaks is not None:
                peaks.append(peak)
            x = requantize(acc, layer.out_shift)
        elif isinstance(layer, PoolLayer):
            x = maxpool2x2(x)
        else:  # pragma: no cover - the reader admits no other kind
            raise TypeError(f"unknown layer {layer!r}")
        outputs.append(x)
    return outputs if taps else x
