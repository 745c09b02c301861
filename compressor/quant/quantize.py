"""Eq. 1 of the paper: every 3x3 kernel as ``alpha * M``, and a float stack turned into a chip model.

The primitives are small pure functions on numpy arrays; `quantize_stack` strings them together in
the order SPEC.md section 6 gives. Nothing here reads files.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from chipq.errors import ChipqError
from chipq.floatnet.model import FloatConv, FloatPool, FloatStack
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer, PoolLayer
from chipq.quant.plan import LayerSpec

_LLOYD_STARTS = (1.0, 0.85, 0.7, 0.55)  # starting alpha as a fraction of max|w| / top level
_LLOYD_ITERATIONS = 6
FIT_THREADS = min(4, os.cpu_count() or 1)  # threads of a multi-bit `fit_kernels` (rows split among them)
_FIT_SPLIT_ROWS = 4096  # fewer rows than this are fitted in the caller's thread


class QuantizationError(ChipqError):
    """A layer cannot be represented in the chip format (a value out of every range)."""


def as_spec(setting: int | LayerSpec) -> LayerSpec:
    """A layer's setting as a `LayerSpec`: plain mask bits (the v1 callers) are 8-bit alpha, every kernel.

    The one place where the two forms meet; everything below works on `LayerSpec`.

    >>> as_spec(3), as_spec(LayerSpec(1, 5, 40))
    (LayerSpec(bits=3, alpha_bits=8, keep=100), LayerSpec(bits=1, alpha_bits=5, keep=40))
    """
    if isinstance(setting, LayerSpec):
        return setting
    return LayerSpec(int(setting))


@dataclass(frozen=True)
class LayerReport:
    """How well one conv layer's weights survived quantization."""

    name: str
    mask_bits: int
    weight_shift: int
    rel_l2: float  # ||W_q - W|| / ||W||
    sqnr_db: float  # 20 log10(||W|| / ||W_q - W||)
    alpha_bits: int = C.ALPHA_BITS
    kept: int | None = None  # kernels stored when the layer is pruned, else None


def top_level(bits: int) -> int:
    """The largest mask value at `bits` bits (levels are the odd integers up to it).

    >>> [top_level(m) for m in range(1, 6)]
    [1, 3, 7, 15, 31]
    """
    return (1 << bits) - 1


def nearest_level(t: np.ndarray, bits: int) -> np.ndarray:
    """The nearest odd level to each element of `t`, ties towards +inf, clipped to the level set.

    >>> nearest_level(np.array([-9.0, -2.0, -0.1, 0.0, 2.0, 4.9]), 3).tolist()
    [-7.0, -1.0, -1.0, 1.0, 3.0, 5.0]
    """
    top = top_level(bits)
    return np.clip(2.0 * np.floor(t / 2.0) + 1.0, -top, top)


def fit_kernels(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``alpha * M`` for each row of `w` (kernels x 9), in float.

    For 1-bit masks the optimum is closed form (M = sign w, alpha = mean |w|). For more bits,
    alternate ``M = nearest level of w / alpha`` and ``alpha = <w, M> / <M, M>`` from a few
    starting alphas and keep, per kernel, the start with the smallest squared error.

    Every row is fitted on its own (its sums run over its own 9 taps), so a layer's rows are
    split across `FIT_THREADS` threads (numpy releases the GIL) with the same result.

    Returns:
        (alpha, M): alpha float64 (kernels,) >= 0, M float64 (kernels, 9) odd levels.
    """
    w = w.astype(np.float64)
    if bits == 1 or len(w) < _FIT_SPLIT_ROWS or FIT_THREADS < 2:
        return _fit_rows(w, bits)
    parts = np.array_split(w, FIT_THREADS)
    with ThreadPoolExecutor(FIT_THREADS) as pool:
        fits = list(pool.map(lambda part: _fit_rows(part, bits), parts))
    return np.concatenate([a for a, _ in fits]), np.concatenate([m for _, m in fits])


def _fit_rows(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """`fit_kernels` of float64 rows in this thread."""
    if bits == 1:
        return np.abs(w).mean(axis=1), np.where(w >= 0, 1.0, -1.0)
    top = top_level(bits)
    peak = np.abs(w).max(axis=1)
    best_alpha = np.zeros(len(w))
    best_m = np.ones_like(w)
    best_err = np.full(len(w), np.inf)
    for start in _LLOYD_STARTS:
        alpha = peak * start / top
        for _ in range(_LLOYD_ITERATIONS):
            m = nearest_level(w / np.where(alpha > 0, alpha, 1.0)[:, None], bits)
            alpha = np.maximum((w * m).sum(axis=1) / (m * m).sum(axis=1), 0.0)
        err = ((w - alpha[:, None] * m) ** 2).sum(axis=1)
        better = err < best_err
        best_alpha[better], best_m[better], best_err[better] = alpha[better], m[better], err[better]
    # One more start: alpha = the smallest |w|. A kernel that already is alpha * M with some level
    # of magnitude 1 (what `chipq.quant.reconstruct` makes) is then found exactly, whatever its peak.
    alpha = np.abs(w).min(axis=1)
    for _ in range(_LLOYD_ITERATIONS):
        m = nearest_level(w / np.where(alpha > 0, alpha, 1.0)[:, None], bits)
        alpha = np.maximum((w * m).sum(axis=1) / (m * m).sum(axis=1), 0.0)
    err = ((w - alpha[:, None] * m) ** 2).sum(axis=1)
    better = err <= best_err  # on a tie (an all-equal |w| kernel) the smaller levels: alpha rounds exactly
    best_alpha[better], best_m[better] = alpha[better], m[better]
    return best_alpha, best_m


def alpha_top(alpha_bits: int = C.ALPHA_BITS) -> int:
    """The largest 8-bit alpha an `alpha_bits`-wide code stands for: ``(2^a - 1) << (8 - a)``.

    >>> alpha_top(8), alpha_top(5), alpha_top(1)
    (255, 248, 128)
    """
    return ((1 << alpha_bits) - 1) << (C.ALPHA_BITS - alpha_bits)


def weight_shift_for(max_alpha: float, alpha_bits: int = C.ALPHA_BITS) -> int:
    """The layer's weight exponent: the largest s in 0..15 with ``max_alpha * 2**s <= alpha_top(a)``.

    >>> weight_shift_for(0.01), weight_shift_for(1.0), weight_shift_for(1e-9)
    (14, 7, 15)
    >>> weight_shift_for(1.0, 1)  # only 128 is left: 1.0 * 2**7 fits it
    7
    """
    top = alpha_top(alpha_bits)
    for shift in range(C.WEIGHT_SHIFT_MAX, -1, -1):
        if max_alpha * (1 << shift) <= top:
            return shift
    return 0


SHIFT_RULES = ("max", "clip")
# how a layer of narrow alpha (fewer than 8 bits) chooses its shift (`layer_shift`). "clip" helps the
# post-training route (the 2 MB plan of BENCHMARKS.md on the held-out set: cosine 0.817 / mAP 0.850
# against 0.802 / 0.815 with "max"), but after the default retraining it costs mAP for a little
# cosine (with OBS saliency, the 2 MB plan: mAP 0.840 against 0.864, cosine 0.877 against 0.851; the
# paper-size plan: mAP 0.897 against 0.908, cosine 0.968 against 0.965; paired intervals exclude 0):
# "max" stays the rule
SHIFT_RULE = "max"
_CLIP_STEPS = 2  # "clip": shifts up to this many steps above the "max" rule's are tried


def layer_shift(alpha: np.ndarray, levels: np.ndarray, alpha_bits: int = C.ALPHA_BITS, rule: str | None = None) -> int:
    """The layer's weight shift for its kernels' fitted alphas `alpha` (kernels,) and levels M
    (`levels`, (kernels, 9), read by "clip" only).

    "max" (`weight_shift_for`): the largest alpha fits the code range. "clip" (a layer of narrow
    alpha only; 8-bit alpha keeps "max"): of that shift and up to `_CLIP_STEPS` above it, the one
    whose rounded, clipped alphas leave the least squared weight error ``sum |M_k|^2 (alpha_k -
    alpha'_k)^2`` (exact for 1-bit masks, whose M does not depend on alpha): a finer grid for the
    many small alphas at the cost of clipping a few large. Ties keep the smaller shift.

    >>> a = np.array([1.0] + [0.02] * 50)
    >>> layer_shift(a, np.ones((51, 9)), 5, "max"), layer_shift(a, np.ones((51, 9)), 5, "clip")
    (7, 8)
    """
    rule = SHIFT_RULE if rule is None else rule
    if rule not in SHIFT_RULES:
        raise ValueError(f"shift rule {rule!r}: one of {', '.join(SHIFT_RULES)}")
    alpha = np.asarray(alpha, np.float64)
    shift = weight_shift_for(float(alpha.max(initial=0.0)), alpha_bits)
    if rule == "max" or alpha_bits >= C.ALPHA_BITS:
        return shift
    weight = np.square(np.asarray(levels, np.float64)).sum(axis=1)
    best, best_err = shift, np.inf
    for candidate in range(shift, min(shift + _CLIP_STEPS, C.WEIGHT_SHIFT_MAX) + 1):
        scale = float(1 << candidate)
        err = float((weight * (alpha - round_alpha(alpha, scale, alpha_bits) / scale) ** 2).sum())
        if err < best_err:
            best, best_err = candidate, err
    return best


def round_alpha(alpha: np.ndarray, scale: float, alpha_bits: int = C.ALPHA_BITS) -> np.ndarray:
    """Real alphas as the chip's 8-bit values at weight scale `scale` (= 2^s), as floats.

    The one rounding rule of alpha: ``alpha * scale`` rounded half up to a multiple of
    ``C.alpha_step(a)``, clipped to ``0..alpha_top(a)`` (an a-bit code ``<< (8 - a)``, SPEC 3.4).

    >>> round_alpha(np.array([3.49, 3.5, 300.0, -1.0]), 1.0).tolist()
    [3.0, 4.0, 255.0, 0.0]
    >>> round_alpha(np.array([3.9, 4.0, 250.0]), 1.0, alpha_bits=6).tolist()
    [4.0, 4.0, 252.0]
    """
    step = float(C.alpha_step(alpha_bits))
    # in the input's own precision (float32 from the torch solves): the bytes v1 always made
    values = np.floor(np.asarray(alpha) * scale / step + 0.5) * step
    return np.clip(values, 0, alpha_top(alpha_bits))


def strongest_kernels(weight: np.ndarray, count: int) -> np.ndarray:
    """The `count` kernels of largest weight energy ``sum w^2`` as a bool (out, in) array.

    The weight-only route's pruning rule: a kernel's energy is a proxy for its share of the layer's
    output (the data-driven route, `chipq.quant.reconstruct`, measures that share itself). Ties
    (e.g. kernels that are already zero) keep the earlier kernel in o-major order, so the choice is
    deterministic.

    >>> w = np.zeros((2, 2, 3, 3)); w[0, 1] = 1.0; w[1, 0] = -2.0
    >>> strongest_kernels(w, 3).tolist()
    [[True, True], [True, False]]
    """
    energy = np.square(np.asarray(weight, dtype=np.float64)).sum(axis=(2, 3)).ravel()
    order = np.argsort(-energy, kind="stable")
    keep = np.zeros(energy.size, dtype=bool)
    keep[order[:count]] = True
    return keep.reshape(weight.shape[:2])


def quantize_kernels(
    w: np.ndarray, bits: int, alpha_bits: int = C.ALPHA_BITS
) -> tuple[np.ndarray, np.ndarray, int]:
    """Eq. 1 for a whole layer: integer alpha (uint8), mask codes (uint8) and the weight shift.

    Args:
        w: float weights (out, in, 3, 3).
        bits: mask width m, 1..5.
        alpha_bits: width of the stored alpha code (`round_alpha`); 8 = v1.

    Returns:
        (alpha (out, in) uint8, codes (out, in, 3, 3) uint8, weight_shift).
    """
    out_ch, in_ch = w.shape[:2]
    alpha_int, m, shift = quantize_rows(w.reshape(-1, C.KERNEL_TAPS).astype(np.float64), bits, alpha_bits)
    return _packed(alpha_int, m, bits, shift, (out_ch, in_ch))


def kernel_rows(weight: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """The kernels `quantize_conv` fits, float64 (kernels, 9): every kernel of `weight` (out, in,
    3, 3) in o-major order, or only the `present` ones (bool (out, in))."""
    flat = np.asarray(weight).reshape(-1, C.KERNEL_TAPS).astype(np.float64)
    return flat if present is None else flat[np.asarray(present, dtype=bool).ravel()]


def quantize_rows(
    flat: np.ndarray, bits: int, alpha_bits: int = C.ALPHA_BITS, fit: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Eq. 1 for kernels as rows (kernels, 9) float64: the rounded alphas (as floats), the levels
    M of each kernel and the weight shift their largest fitted alpha sets.

    `fit` is ``fit_kernels(flat, bits)`` when the caller has it already (retraining fits each
    layer once a step, `chipq.retrain.qat.QatNet`); every row is fitted on its own, so a subset
    of rows fits as it does among all of them.
    """
    alpha, m = fit if fit is not None else fit_kernels(flat, bits)
    shift = layer_shift(alpha, m, alpha_bits)
    scale = float(1 << shift)
    if bits == 1:  # M is the sign of w whatever alpha is: the rounds below would leave alpha and M as they are
        return round_alpha(alpha, scale, alpha_bits), m, shift
    # Two rounds in the integer domain: round alpha, re-pick M for the rounded alpha, refit alpha.
    for _ in range(2):
        alpha_int = round_alpha(alpha, scale, alpha_bits)
        real = np.where(alpha_int > 0, alpha_int / scale, 1.0)
        m = nearest_level(flat / real[:, None], bits)
        alpha = np.maximum((flat * m).sum(axis=1) / (m * m).sum(axis=1), 0.0)
    alpha_int = round_alpha(alpha, scale, alpha_bits)
    real = np.where(alpha_int > 0, alpha_int / scale, 1.0)
    return alpha_int, nearest_level(flat / real[:, None], bits), shift


def _packed(alpha_int: np.ndarray, m: np.ndarray, bits: int, shift: int, kernels: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """`quantize_kernels`' result from the rounded alphas and the levels of each kernel (kernels x 9)."""
    out_ch, in_ch = kernels
    codes = ((m + top_level(bits)) / 2).astype(np.uint8)
    return (
        alpha_int.astype(np.uint8).reshape(out_ch, in_ch),
        codes.reshape(out_ch, in_ch, C.KERNEL_SIZE, C.KERNEL_SIZE),
        shift,
    )


def round_half_up(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, ties towards +inf (the chip's rule), as int64.

    >>> round_half_up(np.array([-2.5, -0.5, 0.5, 1.49])).tolist()
    [-2, 0, 1, 1]
    """
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def quantize_bias(bias: np.ndarray, acc_frac: int) -> tuple[np.ndarray, int]:
    """12-bit bias and its left shift for an accumulator with `acc_frac` fraction bits.

    The bias is rounded to the accumulator scale, then shifted right by the smallest amount that
    fits 12 bits (rounding half up).

    >>> quantize_bias(np.array([0.5, -1.0]), 4)
    (array([  8, -16], dtype=int16), 0)
    >>> quantize_bias(np.array([300.0]), 4)[1]
    2
    """
    at_acc = round_half_up(bias * 2.0**acc_frac)
    for shift in range(C.BIAS_SHIFT_MAX + 1):
        shifted = round_half_up(at_acc / 2.0**shift)
        if shifted.min(initial=0) >= C.BIAS_MIN and shifted.max(initial=0) <= C.BIAS_MAX:
            return shifted.astype(np.int16), shift
    raise QuantizationError(f"bias too large for 12 bits at any shift (max |b| {np.abs(bias).max()})")


def fold_input_normalisation(
    conv: FloatConv, mean: tuple[float, ...], std: tuple[float, ...], mean_int: tuple[int, ...]
) -> FloatConv:
    """conv1 acting on chip input ``x0 = p - mean_int`` instead of ``(p/255 - mean)/std``.

    ``(p/255 - mean)/std = (x0 + mean_int - 255 mean) / (255 std)``: the weights of input plane c
    are divided by ``255 std[c]`` and the constant rest goes into the bias (exact away from the
    border, where zero padding of x0 is padding with the mean pixel).
    """
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float64))
    weight = conv.weight.astype(np.float64) * scale[None, :, None, None]
    rest = np.asarray(mean_int, dtype=np.float64) - 255.0 * np.asarray(mean, dtype=np.float64)
    bias = conv.bias.astype(np.float64) + (weight.sum(axis=(2, 3)) * rest[None, :]).sum(axis=1)
    return FloatConv(conv.name, weight, bias)


def input_mean_int(mean: tuple[float, ...]) -> tuple[int, int, int]:
    """The chip's integer mean pixel: ``round(255 * mean)`` per plane.

    >>> input_mean_int((0.485, 0.456, 0.406))
    (124, 116, 104)
    """
    return tuple(int(v) for v in round_half_up(255.0 * np.asarray(mean)))  # type: ignore[return-value]


def dequantized_weights(layer: ConvLayer) -> np.ndarray:
    """The real-valued weights a conv layer stands for: ``alpha * M * 2**-weight_shift``."""
    return layer.int_weights().astype(np.float64) / 2.0**layer.weight_shift


def dequantized_bias(layer: ConvLayer, in_frac: int) -> np.ndarray:
    """The real value of a conv layer's integer bias (SPEC 4.4), float64, for an input at `in_frac`."""
    return layer.bias.astype(np.float64) * 2.0 ** (layer.bias_shift - layer.weight_shift - in_frac)


def quantize_conv(
    conv: FloatConv,
    spec: int | LayerSpec,
    in_frac: int,
    out_frac: int,
    present: np.ndarray | None = None,
    fit: tuple[np.ndarray, np.ndarray] | None = None,
) -> ConvLayer:
    """One conv layer: kernels as alpha * M at the layer shift, bias at 12 bits, output shift.

    The one home of the per-layer recipe: `quantize_stack` and retraining (`chipq.retrain.qat`,
    every step) both build their layers with it.

    Args:
        conv: float weights and bias (for conv1, `fold_input_normalisation` applied).
        spec: the layer's setting (`LayerSpec`), or plain mask bits (8-bit alpha, every kernel).
        in_frac: fraction bits of the layer input (0 for conv1's ``x0``).
        out_frac: the calibrated fraction bits of the layer output.
        present: the kernels to keep, bool (out, in), chosen by the caller (reconstruction,
            retraining); None: with ``spec.keep < 100`` the ``spec.kept(O*I)`` strongest kernels
            (`strongest_kernels`), else every kernel (no bitmap, a v1 layer).
        fit: ``fit_kernels`` of ``kernel_rows(conv.weight, present)``, when the caller has it.
    """
    spec = as_spec(spec)
    weight = np.asarray(conv.weight)
    out_ch, in_ch = weight.shape[:2]
    if present is None and spec.keep < 100:
        present = strongest_kernels(weight, spec.kept(out_ch * in_ch))
    if present is None:
        alpha_int, m, shift = quantize_rows(kernel_rows(weight), spec.bits, spec.alpha_bits, fit)
    else:  # only the kept kernels are fitted; they alone set the layer's shift
        present = np.asarray(present, dtype=bool)
        kept_alpha, kept_m, shift = quantize_rows(kernel_rows(weight, present), spec.bits, spec.alpha_bits, fit)
        rows = present.ravel()
        alpha_int = np.zeros(rows.size)  # SPEC 3.5: an absent kernel has alpha 0 and mask code 0 (level -top)
        m = np.full((rows.size, C.KERNEL_TAPS), -float(top_level(spec.bits)))
        alpha_int[rows], m[rows] = kept_alpha, kept_m
    alpha, codes, _ = _packed(alpha_int, m, spec.bits, shift, (out_ch, in_ch))
    acc_frac = in_frac + shift
    try:
        bias, bias_shift = quantize_bias(conv.bias, acc_frac)
    except QuantizationError as exc:
        raise QuantizationError(f"layer {conv.name}: {exc}") from None
    out_shift = acc_frac - min(out_frac, acc_frac)
    if out_shift > C.OUT_SHIFT_MAX:
        raise QuantizationError(f"layer {conv.name}: out_shift {out_shift} exceeds {C.OUT_SHIFT_MAX}")
    return ConvLayer(
        conv.name, spec.bits, shift, bias_shift, out_shift, alpha, codes, bias, alpha_bits=spec.alpha_bits, present=present
    )


def quantize_stack(
    stack: FloatStack,
    plan: list[int] | list[LayerSpec],
    act_fracs: list[int],
    input_hw: tuple[int, int] = C.CHIP_INPUT_HW,
    presence: list[np.ndarray | None] | None = None,
) -> tuple[ChipModel, list[LayerReport]]:
    """A float conv stack as a chip model (post-training quantization, no retraining).

    Args:
        stack: the float model; a trailing max-pool is dropped.
        plan: the setting of each conv layer (`LayerSpec` or mask bits), in order.
        act_fracs: fraction bits of each conv layer's output (from calibration).
        input_hw: the chip's input buffer.
        presence: per conv layer, the kept kernels chosen by the caller (`quantize_conv`'s
            `present`), or None entries / None: chosen by `quantize_conv`.

    Returns:
        The chip model and one `LayerReport` per conv layer.
    """
    stack = stack.without_trailing_pool()
    convs = stack.conv_layers()
    if len(plan) != len(convs) or len(act_fracs) != len(convs):
        raise QuantizationError(
            f"plan has {len(plan)} and calibration {len(act_fracs)} entries for {len(convs)} conv layers"
        )
    presence = list(presence) if presence is not None else [None] * len(convs)
    mean_int = input_mean_int(stack.mean)
    layers: list[ConvLayer | PoolLayer] = []
    reports: list[LayerReport] = []
    in_frac, conv_index = 0, 0
    for item in stack.layers:
        if isinstance(item, FloatPool):
            layers.append(PoolLayer(item.name, layers[-1].out_channels))
            continue
        conv = item
        if conv_index == 0:
            conv = fold_input_normalisation(conv, stack.mean, stack.std, mean_int)
        layer = quantize_conv(conv, plan[conv_index], in_frac, act_fracs[conv_index], presence[conv_index])
        layers.append(layer)
        reports.append(_report(conv, layer))
        in_frac = layer.out_frac(in_frac)
        conv_index += 1
    model = ChipModel(input_hw[0], input_hw[1], C.ChannelOrder.RGB, mean_int, tuple(layers))
    return model, reports


def _report(conv: FloatConv, layer: ConvLayer) -> LayerReport:
    w = conv.weight.astype(np.float64)
    err = np.linalg.norm(dequantized_weights(layer) - w)
    norm = np.linalg.norm(w)
    rel = float(err / norm) if norm > 0 else 0.0
    sqnr = float(20 * np.log10(norm / err)) if err > 0 else float("inf")
    kept = layer.kept_kernels() if layer.pruned else None
    return LayerReport(conv.name, layer.mask_bits, layer.weight_shift, rel, sqnr, layer.alpha_bits, kept)
