"""The fast executor's int8 route: oneDNN's uint8 x int8 convolution, exact by construction.

The chip multiplies uint8 activations by 12-bit weights ``W = alpha * M`` into an int32 accumulator.
oneDNN (through PyTorch's ``torch.ops.onednn.qconv2d_pointwise``) multiplies uint8 by int8 into an
int32 accumulator, applies float32 scales and a float32 bias, and rounds to uint8 or writes float32.
This module maps one onto the other so that every output element is the golden one. The argument,
per conv layer with ``s = out_shift`` (SPEC allows 0..31; this route takes s <= 15, larger shifts
go to the float route) and ``off = bias << bias_shift +
2^(s-1)`` (SPEC 4.2), the chip output being ``y = clamp(floor((P + off) / 2^s), 0, 255)`` for the
exact integer product sum ``P``:

* **Single piece** -- an output channel whose weights all lie in ``[-cap, cap]`` runs as one int8
  convolution with weight scale ``2^-s``, bias ``beta = off/2^s - 1/2 + 2^-(s+1)`` and uint8 output.
  oneDNN computes ``round(fl(fl(P) * 2^-s) + beta)``. ``z = (P + off)/2^s + 2^-(s+1) - 1/2`` is never
  within ``2^-(s+1)`` of a half-integer, so any round-to-nearest gives ``floor((P + off)/2^s)``
  provided the float32 arithmetic is exact: it is while ``|z| < 2^(23-s)`` (multiples of
  ``2^-(s+1)`` of that size have at most 24 significant bits), and beyond that -- which includes
  every ``|P| >= 2^24`` when ``|off| < 2^(s+8) - 2^s`` -- the output saturates at 0 or 255 on both
  sides, because float rounding is monotonic. Saturating the uint8 conversion is ReLU and the clamp.
* **Two pieces** -- other output channels split ``W = 2^k * H + L`` (``|L| <= 2^(k-1)``,
  ``|H| <= cap``). One convolution writes ``A = P_H * 2^(k-s)`` in float32 (exact: ``X * sum|H| <
  2^24`` is checked from the weights, X the largest input), a second ``B = fl(fl(P_L * 2^-s) +
  beta)``, exact when ``X * sum|L| + |off| + 2^s < 2^23`` (checked). ``A + B`` is ``z`` exactly;
  its float32 sum is exact below ``2^(23-s)`` and saturates beyond, as above. `round_to_uint8` then
  rounds to nearest and saturates.
* ``cap`` is 127 where the CPU multiplies with AVX512-VNNI/AVX-VNNI (exact int32 dot products) and
  63 otherwise: without VNNI, oneDNN adds pairs of uint8 x int8 products in int16 with saturation,
  which ``2 * 255 * 64 < 2^15`` keeps from happening. `probe` measures it rather than trusting flags.
* The first layer sees ``pixel - mean`` (signed). It runs on the uint8 pixels padded with the mean
  instead of zero, with ``sum W * mean`` folded into ``off``: the same integers.

Channel order: single-piece channels come first, then two-piece ones. The executor keeps activations
in that order and permutes the next layer's input channels to match, restoring the model's order
only for outputs it returns.

A layer whose bounds do not hold (or a CPU/PyTorch build without the op) is reported by `plan_conv`
and runs on the float route instead (`fast._Conv`).
"""

from __future__ import annotations

import ctypes
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from chipq.formats import constants as C
from chipq.formats.model import ConvLayer

HALF_F32_EXACT = C.FLOAT32_EXACT // 2
MAX_SHIFT = 15
PACKED_SHAPES = 4  # input shapes per layer whose packed weights are kept (each: the layer's weights again)
# glibc mallopt parameters (malloc.h) and the value keep_freed_memory sets them to
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_THRESHOLD = 1 << 30
_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of returning it to the system.

    Every layer allocates tensors of several to tens of MB; by default glibc maps each such block
    afresh and unmaps it on free, so every layer pays page faults on its outputs, which in
    development runs cost more than some layers' convolutions. Raising the mmap and trim thresholds
    (process-wide, once) keeps the pages. The process's resident memory then stays at its peak
    instead of shrinking between batches. No-op where glibc is absent.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MALLOC_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, MALLOC_THRESHOLD)
    except (OSError, AttributeError):
        pass


def available() -> bool:
    """PyTorch exposes oneDNN's quantized convolution on this build."""
    try:
        ops = torch.ops.onednn
        return bool(torch.backends.mkldnn.is_available()) and hasattr(ops, "qconv2d_pointwise") and hasattr(
            ops, "qconv_prepack"
        )
    except (AttributeError, RuntimeError):
        return False


_CAP: int | None = None
_PROBED = False


def probe() -> int | None:
    """The widest int8 weight range this CPU convolves exactly: 127, 63, or None (not usable).

    Runs worst cases through oneDNN and compares with exact integer sums: all-255 inputs against
    all-`cap` weights of both signs (where an int16 pair sum would saturate), then random values.
    The answer is cached for the process.
    """
    global _CAP, _PROBED
    if _PROBED:
        return _CAP
    _PROBED = True
    if not available():
        return None
    rng = np.random.default_rng(0)
    for cap in (127, 63):
        try:
            if all(_probe_case(x, w) for x, w in _probe_cases(rng, cap)):
                _CAP = cap
                return cap
        except (RuntimeError, ValueError):  # op present but refusing this build or CPU
            return None
    return None


def _probe_cases(rng: np.random.Generator, cap: int):
    channels = 32  # 255 * 127 * 9 * 32 < 2^24: the float32 output holds every sum exactly
    full = np.full((1, channels, 6, 6), 255, np.uint8)
    for sign in (1, -1):
        yield full, np.full((8, channels, 3, 3), sign * cap, np.int8)
    alternating = np.where(np.arange(channels * 9).reshape(1, channels, 3, 3) % 2 == 0, cap, -cap)
    yield full, np.repeat(alternating, 8, axis=0).astype(np.int8)
    yield (
        rng.integers(0, 256, (2, channels, 7, 5)).astype(np.uint8),
        rng.integers(-cap, cap + 1, (16, channels, 3, 3)).astype(np.int8),
    )


def _probe_case(x: np.ndarray, w: np.ndarray) -> bool:
    expected = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1)
    weight = torch.from_numpy(w)
    scales = torch.ones(w.shape[0], dtype=torch.float32)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    packed = _prepack(weight, scales, tuple(xt.shape), padding=1)
    got = _qconv(xt, packed, scales, None, padding=1, output=torch.float32)
    return bool(torch.equal(got.double(), expected))


def _prepack(weight: torch.Tensor, scales: torch.Tensor, x_shape: tuple[int, ...], padding: int) -> torch.Tensor:
    return torch.ops.onednn.qconv_prepack(
        weight, scales, 1.0, 0, [1, 1], [padding, padding], [1, 1], 1, list(x_shape)
    )


def _qconv(x, packed, scales, bias, padding: int, output, zeros=None) -> torch.Tensor:
    """One oneDNN convolution: input scale 1, zero points 0, weight scales `scales`, float32 bias;
    uint8 output (rounded to nearest, saturated) when `output` is None, else float32."""
    if zeros is None:
        zeros = torch.zeros(scales.shape[0], dtype=torch.int64)
    return torch.ops.onednn.qconv2d_pointwise(
        x, 1.0, 0, packed, scales, zeros, bias, [1, 1], [padding, padding], [1, 1], 1, 1.0, 0, output,
        "none", [], "",
    )


@dataclass
class Int8Plan:
    """How one conv layer maps onto int8 convolutions (see the module docstring)."""

    single: np.ndarray  # output channels (model order) that run as one piece
    double: np.ndarray  # output channels that run as two pieces
    split_bits: int  # k of W = 2^k H + L for the two-piece channels
    offset: np.ndarray  # off per output channel (int64), first-layer mean term included


def plan_conv(layer: ConvLayer, weights: np.ndarray, peak_input: int, cap: int, mean: np.ndarray | None) -> Int8Plan | None:
    """Decide single/two-piece channels and check every bound the exactness argument needs.

    Args:
        layer: the conv layer (shift, bias).
        weights: its int weights (O, I, 3, 3), int64, input channels already in execution order.
        peak_input: the largest input the layer can see (255; pixels for the first layer).
        cap: the int8 weight range `probe` found exact.
        mean: for the first layer the per-channel input mean (its input is padded with it), else None.

    Returns:
        The plan, or None when a bound fails and the layer must take the float route.
    """
    s = layer.out_shift
    if s > MAX_SHIFT:
        return None
    offset = (layer.bias.astype(np.int64) << layer.bias_shift) + ((1 << (s - 1)) if s > 0 else 0)
    if mean is not None:
        offset = offset - (weights.sum(axis=(2, 3)) * mean[None, :]).sum(axis=1)
    if int(np.abs(offset).max(initial=0)) >= (1 << (s + 8)) - (1 << s):
        return None
    rows = weights.reshape(weights.shape[0], -1)
    fits = np.abs(rows).max(axis=1) <= cap
    single, double = np.flatnonzero(fits), np.flatnonzero(~fits)
    if len(double) == 0:
        return Int8Plan(single, double, 0, offset)
    for k in range(7, 0, -1):
        high, low = split(rows[double], k)
        if np.abs(high).max() > cap or np.abs(low).max() > cap:
            continue
        hi_bound = peak_input * np.abs(high).sum(axis=1)
        lo_bound = peak_input * np.abs(low).sum(axis=1) + np.abs(offset[double]) + (1 << s)
        if hi_bound.max() < C.FLOAT32_EXACT and lo_bound.max() < HALF_F32_EXACT:
            return Int8Plan(single, double, k, offset)
    return None


def split(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``w = 2^k * high + low`` with ``|low| <= 2^(k-1)`` (high rounded to nearest, ties up)."""
    high = np.floor_divide(w + (1 << (k - 1)), 1 << k)
    return high, w - (high << k)


class Int8Conv:
    """One conv layer on oneDNN int8 convolutions, per an `Int8Plan`; uint8 NHWC in and out.

    Args:
        layer: the conv layer.
        weights: int weights (O, I, 3, 3) int64 with input channels in execution order.
        plan: from `plan_conv`.
        first: the layer sees pixels (padded with the mean by the caller).
    """

    def __init__(self, layer: ConvLayer, weights: np.ndarray, plan: Int8Plan, first: bool) -> None:
        self.padding = 0 if first else 1
        s = layer.out_shift
        self.out_order = np.concatenate([plan.single, plan.double])
        self.pieces = (len(plan.single) + 2 * len(plan.double)) / max(1, layer.out_channels)  # int8 convs per channel
        parts = []  # (kind, weight, scale, bias) with kind in single/high/low
        if len(plan.single):
            beta = plan.offset[plan.single] / 2.0**s - 0.5 + 2.0 ** -(s + 1)
            parts.append(("single", weights[plan.single], 2.0**-s, beta))
        if len(plan.double):
            high, low = split(weights[plan.double], plan.split_bits)
            beta = plan.offset[plan.double] / 2.0**s - 0.5 + 2.0 ** -(s + 1)
            parts.append(("high", high, 2.0 ** (plan.split_bits - s), None))
            parts.append(("low", low, 2.0**-s, beta))
        self.tensors = [
            (
                kind,
                torch.from_numpy(np.ascontiguousarray(w).astype(np.int8)),
                torch.full((w.shape[0],), scale, dtype=torch.float32),
                None if bias is None else torch.from_numpy(bias.astype(np.float32)),
                torch.zeros(w.shape[0], dtype=torch.int64),
            )
            for kind, w, scale, bias in parts
        ]
        # oneDNN picks its kernel for the input shape given when packing; the last few shapes are kept
        self.packed: OrderedDict[tuple[int, ...], list[torch.Tensor]] = OrderedDict()

    def _packs(self, shape: tuple[int, ...], padding: int) -> list[torch.Tensor]:
        key = (*shape, padding)
        if key in self.packed:
            self.packed.move_to_end(key)
        else:
            self.packed[key] = [_prepack(w, sc, shape, padding) for _, w, sc, _, _ in self.tensors]
            while len(self.packed) > PACKED_SHAPES:
                self.packed.popitem(last=False)
        return self.packed[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, I, H, W) channels-last -> uint8 (N, O, H, W) channels-last, channels in
        `out_order`."""
        padding = self.padding
        packs = self._packs(tuple(x.shape), padding)
        outs, high = [], None
        for (kind, _, scales, bias, zeros), packed in zip(self.tensors, packs):
            if kind == "single":
                outs.append(_qconv(x, packed, scales, bias, padding, None, zeros=zeros))
            elif kind == "high":
                high = _qconv(x, packed, scales, None, padding, torch.float32, zeros=zeros)
            else:  # low: P_L * 2^-s + beta, then + A in float32 (exact, module docstring)
                low = _qconv(x, packed, scales, bias, padding, torch.float32, zeros=zeros)
                outs.append(round_to_uint8(high.add_(low)))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class FirstLayerFloat:
    """The first conv layer in float32 when that is exact: it sees 3 input channels, too few for an
    int8 kernel to pay off.

    ``fl(conv(pixel - mean, W) + off - 2^(s-1) + 1/2)``: every partial sum, bias included, is a
    multiple of 1/2 below ``2^22`` in magnitude (`exact` checks ``X * sum|W| + |bias| < 2^22``), so
    float32 holds it exactly in any summation order; dividing by ``2^s`` and rounding to nearest
    (`round_to_uint8` with scale ``2^s``) is then ``floor((P + off) / 2^s)``, never a tie.
    uint8 (N, 3, H, W) pixels in, uint8 NHWC out.
    """

    LIMIT = 1 << 22

    def __init__(self, layer: ConvLayer, mean: tuple[int, ...], peak_input: int) -> None:
        s = layer.out_shift
        weights = layer.int_weights().astype(np.int64)
        # off - 2^(s-1) + 1/2: the chip's bias term plus 1/2 (SPEC 4.2's rounding term becomes the
        # round-to-nearest below); nothing to add when s = 0
        bias = (layer.bias.astype(np.int64) << layer.bias_shift) + (0.5 if s > 0 else 0.0)
        worst = peak_input * np.abs(weights).reshape(len(weights), -1).sum(axis=1) + np.abs(bias)
        self.exact = bool(worst.max() < self.LIMIT) and s <= MAX_SHIFT
        self.scale = float(2**s)
        self.out_order = np.arange(layer.out_channels)
        self.weight = torch.from_numpy(weights.astype(np.float32)).contiguous(memory_format=torch.channels_last)
        self.bias = torch.from_numpy(np.asarray(bias, dtype=np.float32))
        self.mean = torch.tensor(mean, dtype=torch.float32)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 2, 3, 1).to(torch.float32) - self.mean).permute(0, 3, 1, 2)  # NHWC
        return round_to_uint8(F.conv2d(x, self.weight, self.bias, padding=1), self.scale)


def round_to_uint8(values: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """float32 -> uint8: ``values / scale`` (a power of two: exact) rounded to nearest, saturated
    to [0, 255]; one pass, layout kept.

    `torch.quantize_per_tensor` with zero point 0 does exactly that (ties never occur here, see the
    module docstring); the quantized tensor's bytes are then viewed as uint8.
    """
    with warnings.catch_warnings():  # quantized dtypes carry a deprecation notice in PyTorch 2.13
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_tensor(values, scale, 0, torch.quint8)
    view = torch.empty(0, dtype=torch.uint8)
    return view.set_(quantized.untyped_storage(), quantized.storage_offset(), quantized.size(), quantized.stride())


def pad_with_mean(pixels: torch.Tensor, mean: tuple[int, ...]) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, H+2, W+2) NHWC whose border is the mean: ``pixel - mean``
    padded with zeros, shifted by the mean."""
    n, c, h, w = pixels.shape
    out = torch.empty((n, h + 2, w + 2, c), dtype=torch.uint8)
    out[...] = torch.tensor(mean, dtype=torch.uint8)
    out[:, 1:-1, 1:-1, :] = pixels.permute(0, 2, 3, 1)
    return out.permute(0, 3, 1, 2)


def maxpool2x2(x: torch.Tensor) -> torch.Tensor:
    """SPEC 4.3 on uint8 (N, C, H, W) tensors of any layout; an odd last row or column dropped.

    (PyTorch's own max_pool2d refuses uint8 channels-last tensors above a few thousand elements.)
    """
    h, w = 2 * (x.shape[2] // C.POOL_SIZE), 2 * (x.shape[3] // C.POOL_SIZE)
    top = torch.maximum(x[:, :, 0:h:2, 0:w:2], x[:, :, 0:h:2, 1:w:2])
    return torch.maximum(top, torch.maximum(x[:, :, 1:h:2, 0:w:2], x[:, :, 1:h:2, 1:w:2]))
