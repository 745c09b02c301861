"""conv1's input normalisation folded into its weights, in torch (differentiable) and numpy.

Used where a float network must see exactly what the chip's conv1 sees (``x0 = p - mean_int``):
the data-driven reconstruction (`chipq.quant.reconstruct`) and retraining (`chipq.retrain.qat`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chipq.floatnet.model import FloatConv, FloatStack
from chipq.quant.quantize import fold_input_normalisation, input_mean_int


@dataclass(frozen=True)
class InputFold:
    """conv1's input normalisation: the chip feeds ``x0 = p − mean_int`` (SPEC 4.1, 6)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    mean_int: tuple[int, ...]

    @classmethod
    def of(cls, stack: FloatStack) -> "InputFold":
        return cls(stack.mean, stack.std, input_mean_int(stack.mean))

    def apply(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`fold_input_normalisation` in torch (differentiable): the weights and bias seen by x0."""
        scale = 1.0 / (255.0 * torch.tensor(self.std, dtype=torch.float64))
        folded_w = weight.double() * scale[None, :, None, None]
        rest = torch.tensor(self.mean_int, dtype=torch.float64) - 255.0 * torch.tensor(self.mean, dtype=torch.float64)
        folded_b = bias.double() + (folded_w.sum(dim=(2, 3)) * rest[None, :]).sum(dim=1)
        return folded_w.float(), folded_b.float()

    def apply_numpy(self, conv: FloatConv) -> FloatConv:
        return fold_input_normalisation(conv, self.mean, self.std, self.mean_int)
