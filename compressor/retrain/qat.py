"""Eq. 1 inside a torch forward: the quantized network with float shadow weights (Algorithm 1).

Every forward rebuilds each conv layer exactly as `chipq.quant.quantize.quantize_stack` would from the
current shadow weights: conv1's input normalisation folded in, the layer maximum, the weight shift,
8-bit alpha and m-bit masks per 3x3 kernel (`quantize_kernels`, in float64 numpy), the 12-bit bias
at the accumulator scale. The layer then runs as the torch model of the chip runs it
(`chipq.quant.chipnet.ChipConv`): the conv on the real-valued quantized weights, its output through
the chip's 8-bit activation rule ``clip(round_half_up(x * 2**f), 0, 255) * 2**-f``. So the forward is
the integer chip in real units (float32 convolution, so a value that sits on a rounding boundary may
land on the other side), and the backward goes straight through every rounding (STE): the gradient
of the quantized weight is applied to the shadow weight, and the activations' is that of the clamp.
Chip format v2 settings are part of the rebuild: narrow α on its grid, and a pruned layer's removed
kernels held at zero by a mask (`QatNet.prune_to` removes more of them as training goes on).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from chipq.floatnet.model import FloatConv, FloatPool
from chipq.formats.model import ConvLayer
from chipq.quant.chipnet import ChipConv, ChipPool, activations, round_half_up_ste  # noqa: F401 (re-exported)
from chipq.quant.fold import InputFold  # noqa: F401 (part of this module's interface)
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import (  # noqa: F401
    alpha_top,
    as_spec,
    dequantized_bias,
    dequantized_weights,
    fit_kernels,
    input_mean_int,
    kernel_rows,
    layer_shift,
    quantize_conv,
    strongest_kernels,
    weight_shift_for,
)


def fake_quant_activations(x: torch.Tensor, frac: int) -> torch.Tensor:
    """`chipq.quant.chipnet.activations` with the straight-through backward: ReLU and the chip's
    uint8 activations at `frac` fraction bits in real units, the gradient that of
    ``clamp(x, 0, 255 * 2**-frac)``."""
    return activations(x, frac, ste=True)


class QatNet(nn.Module):
    """The chip's conv layers from one layer on, with float shadow weights as parameters.

    A pruned conv (``keep < 100``) carries its kept kernels as a buffer ``present.<name>`` (bool
    (O, I), part of the state dict): the forward multiplies the shadow weights by it, so a removed
    kernel gets no gradient and stays removed (`prune_to` only ever removes more). It starts as the
    `start` kernels of largest energy of the starting weights (the reconstruction's kept set: its
    removed kernels are zero), at least the layer's target count.

    Args:
        layers: the float layers to train (convs and pools, in order), a suffix of the stack.
        bits: the setting of each conv in `layers` (`LayerSpec`, or mask bits).
        out_fracs: calibrated output fraction bits of each conv in `layers`.
        in_frac: fraction bits of the input this suffix receives (0 when it starts at conv1).
        fold: the input fold when the suffix starts at conv1, else None.
        start: per conv in `layers`, how many kernels a pruned layer starts with (None: its target,
            ``spec.kept(O*I)``).
        hold_shift: record each conv's largest fitted alpha at the start (`alpha_cap`), which
            `cap_alphas` then holds: the layer's weight shift never drops below the start's.
    """

    def __init__(
        self,
        layers: list[FloatConv | FloatPool],
        bits: list[int] | list[LayerSpec],
        out_fracs: list[int],
        in_frac: int,
        fold: InputFold | None = None,
        start: list[int | None] | None = None,
        hold_shift: bool = False,
    ) -> None:
        super().__init__()
        self.kinds: list[tuple[str, str]] = []  # (name, "conv" | "pool") in order
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for layer in layers:
            if isinstance(layer, FloatConv):
                self.weights[layer.name] = nn.Parameter(torch.from_numpy(np.array(layer.weight, np.float32)))
                self.biases[layer.name] = nn.Parameter(torch.from_numpy(np.array(layer.bias, np.float32)))
                self.kinds.append((layer.name, "conv"))
            else:
                self.kinds.append((layer.name, "pool"))
        if len(bits) != len(self.weights) or len(out_fracs) != len(self.weights):
            raise ValueError(f"{len(bits)} bits and {len(out_fracs)} fracs for {len(self.weights)} convs")
        self.bits = dict(zip(self.weights.keys(), [as_spec(b) for b in bits]))
        self.out_fracs = dict(zip(self.weights.keys(), out_fracs))
        self.in_frac = in_frac
        self.fold = fold
        self.present = nn.Module()  # a buffer per pruned conv: its kept kernels
        start = list(start) if start is not None else [None] * len(self.weights)
        for (name, weight), count in zip(self.weights.items(), start):
            target = self.target(name)
            if target is not None:
                initial = strongest_kernels(weight.detach().numpy(), max(target, count or target))
                self.present.register_buffer(name, torch.from_numpy(initial))
        # derived from the start weights (a resumed run rebuilds them so): not in the state dict
        self._fits: dict[str, tuple] = {}  # `_fit`: per conv, (the versions it was made at, (alpha, levels as int8))
        self.alpha_cap: dict[str, float] = {}
        if hold_shift:
            for name in self.weights.keys():
                alpha, m = self._fit(name)
                shift = layer_shift(alpha, m, self.bits[name].alpha_bits)
                self.alpha_cap[name] = alpha_top(self.bits[name].alpha_bits) / 2.0**shift

    def target(self, name: str) -> int | None:
        """The kernels conv `name` keeps in the end (None: not pruned)."""
        spec = self.bits[name]
        if spec.keep == 100:
            return None
        out_ch, in_ch = self.weights[name].shape[:2]
        return spec.kept(out_ch * in_ch)

    def kept(self, name: str) -> np.ndarray | None:
        """Conv `name`'s kept kernels now, bool (O, I), or None when it is not pruned."""
        mask = getattr(self.present, name, None)
        return None if mask is None else mask.numpy().copy()

    def prune_to(self, name: str, count: int) -> None:
        """Remove conv `name`'s weakest kept kernels (shadow weight energy) until `count` are left.

        Only kept kernels are candidates, so a removed kernel never comes back.
        """
        mask = getattr(self.present, name)
        have = int(mask.sum())
        if count >= have:
            return
        energy = self.weights[name].detach().square().sum(dim=(2, 3)).double()
        energy = torch.where(mask, energy, torch.full_like(energy, -1.0)).flatten()  # removed: never chosen
        order = np.argsort(-energy.numpy(), kind="stable")
        keep = np.zeros(energy.numel(), dtype=bool)
        keep[order[:count]] = True
        mask.copy_(torch.from_numpy(keep.reshape(mask.shape)))

    def _fitted_alphas(self, name: str) -> np.ndarray:
        """The float alpha `quantize_conv` fits to each kernel of conv `name` now (before its
        rounding; the largest sets the layer shift), float64 (O*I,), 0 for a removed kernel."""
        alpha = np.zeros(self.weights[name].shape[0] * self.weights[name].shape[1])
        alpha[self._rows(name)] = self._fit(name)[0]
        return alpha

    def _rows(self, name: str) -> np.ndarray | slice:
        """The kernels of conv `name` that are fitted: the kept ones, in o-major order."""
        mask = getattr(self.present, name, None)
        return slice(None) if mask is None else mask.numpy().ravel()

    def _float_conv(self, name: str) -> FloatConv:
        """Conv `name` as `quantize_conv` takes it: the masked shadow weights (conv1 with the fold)."""
        conv = FloatConv(name, self._masked(name).detach().numpy(), self.biases[name].detach().numpy())
        if self.fold is not None and name == self.kinds[0][0]:  # conv1 sees the folded weights
            conv = self.fold.apply_numpy(conv)
        return conv

    def _fit(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``fit_kernels`` of conv `name`'s kept kernels now, as `quantize_conv` fits them.

        Kept until the shadow weights or the kept kernels change (torch counts every in-place
        change of a tensor in its ``_version``: the optimizer's step, `prune_to`, a restore), so
        `cap_alphas` after a step and the next forward share one fit.
        """
        key = self._fit_key(name)
        kept = self._fits.get(name)
        if kept is None or kept[0] != key:
            alpha, m = fit_kernels(kernel_rows(self._float_conv(name).weight, self.kept(name)), self.bits[name].bits)
            kept = (key, (alpha, m.astype(np.int8)))  # the levels are odd integers within ±31: int8 holds them exactly
            self._fits[name] = kept
        alpha, m = kept[1]
        return alpha, m.astype(np.float64)

    def _fit_key(self, name: str) -> tuple:
        """The state `_fit` is made from: the versions of conv `name`'s shadow weights and kept kernels."""
        mask = getattr(self.present, name, None)
        return self.weights[name]._version, None if mask is None else mask._version

    def cap_alphas(self) -> int:
        """Scale each kernel whose fitted alpha exceeds its conv's `alpha_cap` back to it (a
        kernel scaled by c keeps its mask and fits alpha c times, the fold included), so
        `quantize_conv` keeps the start's weight shift. Returns the kernels scaled."""
        scaled = 0
        for name, cap in self.alpha_cap.items():
            alpha = self._fitted_alphas(name)
            over = alpha > cap
            if not over.any():
                continue
            factor = np.ones_like(alpha)
            factor[over] = cap / alpha[over] * (1.0 - 1e-6)  # float32 weights: a margin below the cap
            weight = self.weights[name]
            with torch.no_grad():  # a factor of 1 leaves a weight as it is, bit for bit
                weight.mul_(torch.from_numpy(factor.reshape(weight.shape[:2])).to(weight.dtype)[:, :, None, None])
            self._refit(name, over)
            scaled += int(over.sum())
        return scaled

    def _refit(self, name: str, changed: np.ndarray) -> None:
        """Bring conv `name`'s kept fit up to date after only the kernels `changed` (bool (O*I,),
        kept ones) were scaled: those are fitted again, the rest kept (each kernel is fitted on
        its own, so the result is the fit of the whole layer)."""
        alpha, m = (part.copy() for part in self._fits[name][1])
        rows = changed[self._rows(name)]
        alpha[rows], m[rows] = fit_kernels(kernel_rows(self._float_conv(name).weight)[changed], self.bits[name].bits)  # m: int8, exact
        self._fits[name] = (self._fit_key(name), (alpha, m))

    def _masked(self, name: str) -> torch.Tensor:
        """The shadow weights with the removed kernels at zero (no gradient reaches those)."""
        weight = self.weights[name]
        mask = getattr(self.present, name, None)
        return weight if mask is None else weight * mask[:, :, None, None].to(weight.dtype)

    def float_layers(self) -> list[FloatConv | FloatPool]:
        """The current shadow weights as float layers (float32 copies), in order."""
        out: list[FloatConv | FloatPool] = []
        for name, kind in self.kinds:
            if kind == "pool":
                out.append(FloatPool(name))
            else:
                weight = self._masked(name).detach().numpy().copy()
                out.append(FloatConv(name, weight, self.biases[name].detach().numpy().copy()))
        return out

    def chip_layers(self) -> list[ConvLayer]:
        """The conv layers `quantize_stack` would build from the current shadow weights."""
        layers, frac = [], self.in_frac
        for index, conv in enumerate(c for c in self.float_layers() if isinstance(c, FloatConv)):
            if index == 0 and self.fold is not None:
                conv = self.fold.apply_numpy(conv)
            layer = quantize_conv(conv, self.bits[conv.name], frac, self.out_fracs[conv.name], self.kept(conv.name))
            layers.append(layer)
            frac = layer.out_frac(frac)
        return layers

    def forward(self, x: torch.Tensor, taps: bool = False):
        """Run the quantized suffix.

        Args:
            x: the suffix input in real units (conv1: ``p − mean_int`` as float), (N, C, H, W).
            taps: also return every conv's output.

        Returns:
            The last layer's output in real units (values on the chip's grid), or with `taps` a
            dict layer name -> output.
        """
        frac = self.in_frac
        outputs = {}
        for index, (name, kind) in enumerate(self.kinds):
            if kind == "pool":
                x = ChipPool(name).forward(x)
            else:
                x, frac = self._conv(x, name, frac, first=index == 0)
            outputs[name] = x
        return outputs if taps else x

    def _quantized(self, name: str, in_frac: int, first: bool):
        """Eq. 1 of one layer from its shadow weights, exactly as `chip_layers` (numpy fold in
        float64 for conv1): real weights, real bias, output fraction bits (no gradient)."""
        fit = self._fit(name)
        layer = quantize_conv(self._float_conv(name), self.bits[name], in_frac, self.out_fracs[name], self.kept(name), fit)
        return ChipConv.of_layer(layer, in_frac)

    def _conv(self, x: torch.Tensor, name: str, in_frac: int, first: bool):
        weight, bias = self._masked(name), self.biases[name]
        if first and self.fold is not None:
            weight, bias = self.fold.apply(weight, bias)  # the fold's gradient reaches the shadow
        chip = self._quantized(name, in_frac, first)
        # STE: the forward sees the chip's values, the gradient lands on the shadow weights.
        weight = weight + (chip.weight - weight).detach()
        bias = bias + (chip.bias - bias).detach()
        return ChipConv(name, weight, bias, chip.frac).forward(x, ste=True), chip.frac
