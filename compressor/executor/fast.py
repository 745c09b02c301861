"""The fast executor: the golden executor's arithmetic, batched, on routes proven exact.

Two routes, chosen per process (`FastExecutor`'s ``route``):

* **int8** (the default where it runs): oneDNN's uint8 x int8 convolutions through PyTorch, with
  12-bit weights split into int8 pieces and the requantisation folded into oneDNN's float32
  epilogue where that is exact -- see `int8` for the argument. It needs PyTorch's oneDNN build and a
  CPU on which a start-up self-test (`int8.probe`, then small random models against `golden.run`)
  passes; otherwise the float route runs. A layer whose bounds the int8 argument cannot prove runs
  on the float route inside the int8 one.
* **float**: every value on the chip path is an integer, and float32 holds every integer up to
  2^24 exactly. For each conv, `channel_groups` splits the input channels into contiguous groups
  such that, for every output channel, (largest input) x (sum of |W| over the group) < 2^24: then
  every partial sum of that group's float32 convolution is an exact integer whatever order the BLAS
  adds in. The groups' results are added in int32, which cannot overflow because SPEC 4.5 makes the
  writer and the reader prove |accumulator| < 2^31 for the whole sum, bias and rounding term
  included. Bias, rounding, the arithmetic right shift, ReLU and saturation then run on int32
  exactly as in SPEC 4.2. A layer in which a single input channel could already leave float32's
  exact range runs as one float64 convolution (exact below 2^53).

On both routes an absent kernel of a chip format v2 layer (SPEC 3.5) weighs zero and runs as such;
output channels that keep no kernel at all are not computed but filled with their constant
(`pruned`), where enough of a layer's outputs are dead for that to pay.

Either way the result is tested equal, element for element, to `golden.run`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from chipq.errors import ChipqError
from chipq.executor import int8
from chipq.executor.pruned import SkipDeadOutputs, split_dead_outputs
from chipq.formats import constants as C
from chipq.formats.bounds import largest_input
from chipq.formats.model import ChipModel, ConvLayer

DEFAULT_BATCH = 8


def channel_groups(layer: ConvLayer, peak_input: int, limit: int = C.FLOAT32_EXACT) -> list[tuple[int, int]]:
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
    """One conv layer prepared for the float route.

    The accumulator is the sum, in int32, of float32 convolutions over channel groups that are each
    exact (`channel_groups`); a layer whose single channel could already leave float32's exact range
    runs as one float64 convolution instead (exact below 2^53, SPEC 4.5).

    Args:
        layer: the conv layer.
        peak_input: the largest |input| it can see.
        in_order: the order its input channels arrive in (model indices), None for the model's.
    """

    def __init__(self, layer: ConvLayer, peak_input: int, in_order: np.ndarray | None = None) -> None:
        self.layer = layer
        if in_order is not None:
            layer = replace(layer, alpha=layer.alpha[:, in_order], mask=layer.mask[:, in_order])
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


class _FloatStep:
    """A float-route conv inside the int8 route: uint8 NHWC in (any channel order), uint8 out in the
    model's channel order."""

    def __init__(self, conv: _Conv, first: bool, mean: tuple[int, ...]) -> None:
        self.conv, self.first = conv, first
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.first:
            x = x - self.mean
        return self.conv(x).to(torch.uint8).contiguous(memory_format=torch.channels_last)


ROUTES = ("auto", "int8", "float")
# PyTorch settings that may let float32 convolutions compute in bf16/tf32; each must stay IEEE
_FP32_SETTINGS = ("fp32_precision", "mkldnn.fp32_precision", "mkldnn.conv.fp32_precision")


class InexactFloat(ChipqError):
    """PyTorch is set to compute float32 convolutions in a reduced precision (bf16, tf32)."""


@contextmanager
def _exact_float() -> Iterator[None]:
    """No autograd, and no NNPACK: PyTorch sends float32 convolutions of 16+ images there when
    oneDNN is disabled, and its Winograd/FFT transforms do not keep integer sums exact."""
    with torch.no_grad(), torch.backends.nnpack.flags(enabled=False):
        yield


def check_float32_ieee() -> None:
    """Refuse to run when a PyTorch setting lets float32 convolutions round (the float route and
    the int8 route's first layer rely on exact float32 integer sums).

    Raises:
        InexactFloat: naming the setting.
    """
    for path in _FP32_SETTINGS:
        value = torch.backends
        for part in path.split("."):
            value = getattr(value, part, "none")
        if value not in ("none", "ieee"):
            raise InexactFloat(
                f"torch.backends.{path} is {value!r}: chipq's exact executor needs IEEE float32 "
                "(set it to 'ieee' or 'none')"
            )


class FastExecutor:
    """Runs a chip model on batches of images, bit-exact with `golden.run`.

    Args:
        model: the chip model.
        batch: images per forward pass (bounds memory at large inputs).
        route: "int8" (oneDNN uint8 x int8 convolutions, `int8`), "float" (float BLAS over exact
            channel groups) or "auto": int8 where this CPU and PyTorch build pass `int8.probe`, float
            otherwise. Within the int8 route a layer whose bounds do not hold runs on the float route.
    """

    def __init__(self, model: ChipModel, batch: int = DEFAULT_BATCH, route: str = "auto") -> None:
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
        cap = _int8_cap() if route != "float" else None
        if route == "int8" and cap is None:
            raise RuntimeError("the int8 route is not available: oneDNN int8 convolution missing or not exact here")
        self._build(model, batch, cap)

    @classmethod
    def with_cap(cls, model: ChipModel, cap: int | None, batch: int = DEFAULT_BATCH) -> FastExecutor:
        """The int8 route with int8 weights limited to [-cap, cap] (None: the float route), without
        the self-test: for the self-test itself and for tests of the 63 range non-VNNI CPUs get."""
        executor = cls.__new__(cls)
        executor._build(model, batch, cap)
        return executor

    def _build(self, model: ChipModel, batch: int, cap: int | None) -> None:
        self.model = model
        self.batch = max(1, int(batch))
        self.route = "int8" if cap is not None else "float"
        # for reports: "int8 route, int8 weights within ±127" (±63 without VNNI) or "float route"
        self.route_label = "float route" if cap is None else f"int8 route, int8 weights within ±{cap}"
        int8.keep_freed_memory()
        # one (step, output channel order) pair per layer on both routes; a pool's step is None
        if self.route == "float":
            self.steps: list = [
                (_float_step(layer, largest_input(model, index)) if isinstance(layer, ConvLayer) else None,
                 np.arange(layer.out_channels))
                for index, layer in enumerate(model.layers)
            ]
        else:
            self.steps = self._int8_steps(cap)
        self.mean = torch.tensor(model.input_mean, dtype=torch.float32).reshape(1, -1, 1, 1)

    def _int8_steps(self, cap: int) -> list:
        """(step, output channel order) per layer; a step is an `int8.Int8Conv`, a `_FloatStep` or
        None for a pool."""
        steps, order = [], np.arange(len(self.model.input_mean))
        for index, layer in enumerate(self.model.layers):
            if not isinstance(layer, ConvLayer):
                steps.append((None, order))
                continue
            split = split_dead_outputs(layer)
            if split is None:
                step, out_order = self._int8_step(index, layer, order, cap)
            elif split.live_layer is None:
                step, out_order = None, np.arange(0)
            else:
                step, out_order = self._int8_step(index, split.live_layer, order, cap)
            if split is not None:
                step = SkipDeadOutputs(step, split, out_order)
                out_order = step.out_order
            steps.append((step, out_order))
            order = out_order
        return steps

    def _int8_step(self, index: int, layer: ConvLayer, order: np.ndarray, cap: int) -> tuple:
        """The int8 route's step for conv `layer` whose input channels arrive in `order`, and the
        order of its output channels."""
        first = index == 0
        if first:
            step = int8.FirstLayerFloat(layer, self.model.input_mean, largest_input(self.model, 0))
            if step.exact:
                return step, step.out_order
        weights = layer.int_weights().astype(np.int64)[:, order]
        mean = np.asarray(self.model.input_mean, dtype=np.int64)[order] if first else None
        plan = int8.plan_conv(layer, weights, C.ACT_MAX, cap, mean)
        if plan is None:
            conv = _Conv(layer, largest_input(self.model, index), None if first else order)
            return _FloatStep(conv, first, self.model.input_mean), np.arange(layer.out_channels)
        step = int8.Int8Conv(layer, weights, plan, first)
        return step, step.out_order

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
        check_float32_ieee()
        chunk_fn = self._run_chunk if self.route == "float" else self._run_chunk_int8
        chunks = [chunk_fn(pixels[i : i + self.batch], taps) for i in range(0, len(pixels), self.batch)]
        if taps:
            return [np.concatenate([chunk[k] for chunk in chunks]) for k in range(len(self.steps))]
        return np.concatenate(chunks)

    def _run_chunk(self, pixels: np.ndarray, taps: bool):
        outputs = []
        with _exact_float():
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32) - self.mean
            for step, _ in self.steps:
                x = step(x) if step is not None else int8.maxpool2x2(x)
                if taps:
                    outputs.append(x.to(torch.uint8).numpy())
        return outputs if taps else x.to(torch.uint8).numpy()

    def _run_chunk_int8(self, pixels: np.ndarray, taps: bool):
        outputs = []
        with _exact_float():
            x = torch.from_numpy(np.ascontiguousarray(pixels))
            first, order = self.steps[0]
            if isinstance(getattr(first, "step", first), int8.Int8Conv):  # SkipDeadOutputs wraps one
                x = int8.pad_with_mean(x, self.model.input_mean)
            for step, order in self.steps:
                x = step(x) if step is not None else int8.maxpool2x2(x)
                if taps:
                    outputs.append(_model_order(x, order))
        return outputs if taps else _model_order(x, order)


def _float_step(layer: ConvLayer, peak_input: int):
    """The float route's step for a conv: `_Conv`, on its live outputs only where that pays (`pruned`)."""
    split = split_dead_outputs(layer)
    if split is None:
        return _Conv(layer, peak_input)
    live = None if split.live_layer is None else _Conv(split.live_layer, peak_input)
    return SkipDeadOutputs(live, split, None)


@functools.cache
def _int8_cap() -> int | None:
    """`int8.probe`'s weight range, confirmed once per process by `selftest.int8_matches_golden`;
    None when either fails: the float route is then used."""
    from chipq.executor import selftest

    cap = int8.probe()
    return cap if cap is not None and selftest.int8_matches_golden(cap) else None


def _model_order(x: torch.Tensor, order: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) in execution channel order -> numpy, contiguous, in the model's order."""
    if not np.array_equal(order, np.arange(len(order))):
        x = x[:, torch.from_numpy(np.argsort(order))]
    return x.contiguous().numpy()
