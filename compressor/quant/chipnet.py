"""The chip in torch: the one integer-faithful forward that sensitivity, reconstruction, retraining
and the benches run.

The golden executor (`chipq.executor.golden`) defines the chip's arithmetic in integers. This module
runs the same chain in real units, so that float layers, quantized layers and gradients can be
mixed in one network:

- the input is ``x0 = p − mean_int`` (`chip_input`, SPEC 4.1);
- a conv layer is a 3x3 convolution, zero padding 1, with real weights and bias (`conv3x3`); a chip
  layer's are ``α·M·2^-s`` and ``bias·2^(bias_shift − s − f_in)`` (`ChipConv.of_layer`), a float
  layer's are its own (`ChipConv.of_float`);
- its output goes through the 8-bit activation rule (`activations`): ReLU, saturation at 255 and
  rounding half up on the grid ``2^-f``, in real units, ``floor(clamp(x, 0, 255·2^-f) / 2^-f + 0.5) · 2^-f``
  — the numpy rule `chipq.quant.calibrate.quantize_activations` in torch (tests/quant/test_chipnet.py
  checks the two equal). With ``ste=True`` its backward goes straight through the rounding (the
  straight-through estimator of retraining): gradient one where the clamp passes, zero where it cuts;
- a pool is the 2x2 max-pool, stride 2, an odd last row or column dropped (`pool2x2`);
- `ChipNet` runs a list of those layers from any layer on, with taps and with one layer swapped
  (what the sensitivity measurement needs).

Arithmetic: float32 everywhere, as every caller ran it before this module existed. `conv3x3`'s
``chunk`` runs the convolution on that many images at a time (`chipq.quant.reconstruct` uses 8);
the per-image result of a CPU convolution may depend on the batch it runs in, so each caller keeps
its own chunking and the bytes it always made.

How faithful: the values are exactly the chip's when no float32 rounding happens, i.e. when every
accumulator, counted in units of ``2^-(f_in + s)``, stays below 2^24 in magnitude (whatever order
the convolution sums in, each partial sum is then an exact float32), and ``out_shift ≤ 16`` (so
that ``acc·2^-out_shift + 0.5`` is exact below 256). Then the layer's output divided by ``2^-f`` is
golden's uint8 map, every element (tests/quant/test_chipnet.py pins it). On VGG-16 accumulators
go beyond 2^24: a value that sits on a rounding boundary may then land one step away, rarely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from chipq.floatnet.model import FloatConv, FloatPool, FloatStack
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer
from chipq.quant.quantize import dequantized_bias, dequantized_weights, fold_input_normalisation, input_mean_int


def chip_input(pixels: np.ndarray | torch.Tensor, mean_int: tuple[int, ...]) -> torch.Tensor:
    """SPEC 4.1 in real units: uint8 (N, 3, H, W) pixels minus the integer mean, float32 (exact)."""
    if not isinstance(pixels, torch.Tensor):
        pixels = torch.from_numpy(np.ascontiguousarray(pixels))
    mean = torch.tensor(mean_int, dtype=torch.float32).reshape(1, -1, 1, 1)
    return pixels.float() - mean


def on_chip_input(stack: FloatStack) -> list[FloatConv | FloatPool]:
    """The float stack's layers (a trailing pool dropped) with conv1 acting on ``p − mean_int``
    (`fold_input_normalisation`, float64)."""
    stack = stack.without_trailing_pool()
    layers = list(stack.layers)
    for i, item in enumerate(layers):
        if isinstance(item, FloatConv):
            layers[i] = fold_input_normalisation(item, stack.mean, stack.std, input_mean_int(stack.mean))
            break
    return layers


def round_half_up_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x + 0.5)`` forward, identity backward (the straight-through estimator)."""
    return x + (torch.floor(x + 0.5) - x).detach()


def activations(x: torch.Tensor, frac: int, *, ste: bool = False) -> torch.Tensor:
    """The chip's ReLU and uint8 activations at `frac` fraction bits, in real units.

    The torch form of `chipq.quant.calibrate.quantize_activations`:
    ``floor(clamp(x, 0, 255·2^-frac) / 2^-frac + 0.5) · 2^-frac``.

    Args:
        x: a conv output in real units (pre-ReLU).
        frac: the output's fraction bits (may be negative).
        ste: backward straight through the rounding: the gradient is that of
            ``clamp(x, 0, 255·2^-frac)``, one inside and zero where the chip's ReLU or its
            saturation cuts. Without it the rounding's gradient is zero. The forward is the same
            value either way.

    >>> activations(torch.tensor([-1.0, 0.24, 0.26, 100.0]), 2).tolist()
    [0.0, 0.25, 0.25, 63.75]
    """
    step = 2.0**-frac
    clipped = torch.clamp(x, 0.0, C.ACT_MAX * step)
    if ste:
        return round_half_up_ste(clipped / step) * step
    return torch.floor(clipped / step + 0.5) * step


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """3x3 convolution, stride 1, zero padding 1, in real units (pre-activation).

    Args:
        chunk: images per convolution call (None: the whole batch at once; see the module doc).
    """
    if chunk is None:
        return F.conv2d(x, weight, bias, padding=1)
    return torch.cat([F.conv2d(x[i : i + chunk], weight, bias, padding=1) for i in range(0, len(x), chunk)])


def pool2x2(x: torch.Tensor) -> torch.Tensor:
    """SPEC 4.3: 2x2 max-pool, stride 2 (an odd last row or column dropped)."""
    return F.max_pool2d(x, C.POOL_SIZE)


@dataclass(frozen=True)
class ChipConv:
    """One conv layer of the torch chip: real weights (O, I, 3, 3), bias (O,), output fraction bits.

    ``frac`` None: the output goes through a float ReLU instead of the 8-bit activations (an
    ablation that keeps float activations).
    """

    name: str
    weight: torch.Tensor
    bias: torch.Tensor
    frac: int | None

    @classmethod
    def of_layer(cls, layer: ConvLayer, in_frac: int) -> "ChipConv":
        """A chip layer whose input has `in_frac` fraction bits: ``α·M·2^-s``, its real bias, and
        the output fraction bits it reaches (`ConvLayer.out_frac`)."""
        weight = torch.from_numpy(dequantized_weights(layer).astype(np.float32))
        bias = torch.from_numpy(dequantized_bias(layer, in_frac).astype(np.float32))
        return cls(layer.name, weight, bias, layer.out_frac(in_frac))

    @classmethod
    def of_float(cls, conv: FloatConv, frac: int | None) -> "ChipConv":
        """A float layer's own weights (float32) with the 8-bit activations at `frac`."""
        weight = torch.from_numpy(np.asarray(conv.weight, np.float32))
        bias = torch.from_numpy(np.asarray(conv.bias, np.float32))
        return cls(conv.name, weight, bias, frac)

    def forward(self, x: torch.Tensor, *, ste: bool = False, chunk: int | None = None) -> torch.Tensor:
        """The layer: convolution, then the activation rule (or a float ReLU when `frac` is None)."""
        y = conv3x3(x, self.weight, self.bias, chunk=chunk)
        return F.relu(y) if self.frac is None else activations(y, self.frac, ste=ste)


@dataclass(frozen=True)
class ChipPool:
    """A 2x2 max-pool of the torch chip."""

    name: str

    def forward(self, x: torch.Tensor, *, ste: bool = False, chunk: int | None = None) -> torch.Tensor:
        return pool2x2(x)


ChipLayer = ChipConv | ChipPool


class ChipNet:
    """A chain of `ChipConv` and `ChipPool` layers, run in real units (see the module docstring).

    Args:
        layers: the chain, in order.
        mean_int: the integer mean pixel the chip subtracts (for `input`), when the chain starts at conv1.
        chunk: images per convolution call (`conv3x3`).
    """

    def __init__(self, layers: list[ChipLayer], mean_int: tuple[int, ...] | None = None, chunk: int | None = None) -> None:
        self.layers = list(layers)
        self.mean_int = mean_int
        self.chunk = chunk

    @classmethod
    def of_model(cls, model: ChipModel, chunk: int | None = None) -> "ChipNet":
        """The chip model itself: every layer's real weights at the fraction bits the chip reaches."""
        layers: list[ChipLayer] = []
        frac = 0
        for layer in model.layers:
            if isinstance(layer, ConvLayer):
                conv = ChipConv.of_layer(layer, frac)
                frac = conv.frac
                layers.append(conv)
            else:
                layers.append(ChipPool(layer.name))
        return cls(layers, tuple(model.input_mean), chunk)

    @classmethod
    def of_stack(cls, stack: FloatStack, fracs: list[int], chunk: int | None = None) -> "ChipNet":
        """A float stack on the chip's input (conv1 with the input normalisation folded in, float64
        then float32) with the chip's 8-bit activations at `fracs`: float weights, chip activations."""
        layers: list[ChipLayer] = []
        convs = 0
        for item in on_chip_input(stack):
            if isinstance(item, FloatPool):
                layers.append(ChipPool(item.name))
                continue
            layers.append(ChipConv.of_float(item, int(fracs[convs])))
            convs += 1
        return cls(layers, input_mean_int(stack.mean), chunk)

    def input(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (N, 3, H, W) pixels as conv1's input ``p − mean_int`` (`chip_input`)."""
        if self.mean_int is None:
            raise ValueError("this chain does not start at the chip input (no mean pixel)")
        return chip_input(pixels, self.mean_int)

    def conv_positions(self) -> list[int]:
        """Positions in `layers` of the conv layers, in order."""
        return [pos for pos, layer in enumerate(self.layers) if isinstance(layer, ChipConv)]

    def run(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        *,
        swap: dict[int, ChipLayer] | None = None,
        taps: bool = False,
        ste: bool = False,
    ):
        """Run ``layers[start:stop]`` on `x`, the input of ``layers[start]`` in real units.

        Args:
            swap: position -> layer run there instead (e.g. one conv quantized, the rest float).
            taps: return every layer's output (a list, one per layer run), not just the last.
            ste: the activations' backward goes straight through the rounding (`activations`).
        """
        swap = swap or {}
        outputs = []
        stop = len(self.layers) if stop is None else stop
        for pos in range(start, stop):
            layer = swap.get(pos, self.layers[pos])
            x = layer.forward(x, ste=ste, chunk=self.chunk)
            if taps:
                outputs.append(x)
        return outputs if taps else x
