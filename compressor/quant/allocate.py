"""Mask widths per layer under a byte budget: exact blob sizes and an exact knapsack.

**Cost.** The blob of a plan is the 64-byte header, one 48-byte record per layer, and each conv
payload (alpha, bias and mask regions, `chipq.formats.packing.conv_region_sizes`) at the first
8-byte-aligned offset after the previous one (SPEC 2, 3; `chipq.formats.writer.to_bytes`).
`blob_bytes` computes exactly that; nothing in it depends on weight values, so the size of every
plan is known before anything is quantized. Because of the alignment gaps a layer's cost depends on
where the previous payload ended, so sizes do not simply add — the search below works on exact end
offsets and never on an approximation.

**Search.** One width per conv layer, minimising the additive loss of `Sensitivity.loss` (half the
squared descriptor distance each layer adds; the module docstring of `chipq.quant.sensitivity`
says why it adds) subject to ``blob bytes <= budget``. A dynamic programme over the layers keeps,
after each layer, the *labels* (end offset, loss so far, widths so far) that no other label
dominates (an offset no larger and a loss no larger). Dropping dominated labels is exact: the next
payload starts at ``align_up(offset)``, which never decreases as the offset grows, so whatever
continues a dominated label continues its dominator at no larger size and the same added loss. The
labels left after the last layer are the whole Pareto front of size against predicted loss, and the
best plan under any budget is the front's last point that fits it. Labels that cannot fit the budget
even at 1 bit for every later layer are dropped on the way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chipq.errors import UsageError
from chipq.floatnet.model import FloatConv, FloatPool, FloatStack
from chipq.formats import constants as C
from chipq.formats.packing import conv_region_sizes
from chipq.formats.reader import first_payload_offset

WIDTHS = tuple(range(C.MIN_MASK_BITS, C.MAX_MASK_BITS + 1))
FP32_BYTES = 4

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


class BudgetError(UsageError):
    """A budget that does not parse, or that no plan fits."""


@dataclass(frozen=True)
class Layout:
    """What fixes a blob's size: the layer count and the (out, in) channels of each conv."""

    layer_count: int
    convs: tuple[tuple[str, int, int], ...]  # (name, out_channels, in_channels), conv order
    conv_positions: tuple[int, ...]  # each conv's index among all layers

    @classmethod
    def of(cls, stack: FloatStack) -> "Layout":
        """The layout of the blob `chipq compress` writes for `stack` (trailing pool dropped)."""
        layers = stack.without_trailing_pool().layers
        convs, positions = [], []
        for index, layer in enumerate(layers):
            if isinstance(layer, FloatConv):
                convs.append((layer.name, layer.out_channels, layer.in_channels))
                positions.append(index)
            elif not isinstance(layer, FloatPool):  # pragma: no cover - FloatStack holds nothing else
                raise TypeError(f"unexpected layer {layer!r}")
        return cls(len(layers), tuple(convs), tuple(positions))

    @property
    def table_end(self) -> int:
        return C.HEADER_SIZE + self.layer_count * C.LAYER_RECORD_SIZE

    def payload(self, index: int, bits: int) -> int:
        """Bytes of conv `index`'s payload at `bits` mask bits (alpha + bias + mask regions)."""
        _, out_ch, in_ch = self.convs[index]
        return sum(conv_region_sizes(out_ch, in_ch, bits))

    def fp32_weight_bytes(self) -> int:
        """fp32 bytes of all conv weights (no biases), the numerator of every chipq ratio."""
        return sum(out_ch * in_ch * C.KERNEL_TAPS * FP32_BYTES for _, out_ch, in_ch in self.convs)


def blob_bytes(layout: Layout, plan: Sequence[int]) -> int:
    """The exact size of the blob of `plan` (equals ``len(to_bytes(model))``)."""
    if len(plan) != len(layout.convs):
        raise ValueError(f"plan has {len(plan)} widths for {len(layout.convs)} conv layers")
    end = layout.table_end
    for index, bits in enumerate(plan):
        end = first_payload_offset(end) + layout.payload(index, bits)
    return end


def parse_budget(text: str, layout: Layout) -> int:
    """A budget in bytes from ``3914104``, ``4MB`` / ``3.9 MB`` (SI), ``4MiB``, or a ratio ``15x``.

    A ratio is fp32 conv weight bytes / blob bytes, the ratio `chipq compress` and `chipq inspect`
    print; ``15x`` means a blob of at most ``floor(fp32 / 15)`` bytes.

    >>> lay = Layout(1, (("conv1_1", 64, 3),), (0,))
    >>> parse_budget("4MB", lay), parse_budget("1 KiB", lay), parse_budget("2x", lay)
    (4000000, 1024, 3456)
    """
    raw = text.strip()
    if raw.lower().endswith("x"):
        try:
            ratio = float(raw[:-1])
        except ValueError:
            raise BudgetError(f"--budget {text!r}: expected bytes, a size such as 4MB, or a ratio such as 15x") from None
        if not math.isfinite(ratio) or ratio <= 0:
            raise BudgetError(f"--budget {text}: the ratio must be a positive number")
        return int(layout.fp32_weight_bytes() // ratio)
    match = _BUDGET.match(raw)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise BudgetError(f"--budget {text!r}: expected bytes, a size such as 4MB, or a ratio such as 15x")
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise BudgetError(f"--budget {text}: must be at least 1 byte")
    return int(value)


@dataclass(frozen=True)
class Point:
    """One plan on the front: its widths, exact blob bytes and predicted loss."""

    plan: tuple[int, ...]
    bytes: int
    loss: float


def pareto_front(layout: Layout, loss: Sequence[Sequence[float]], budget: int | None = None) -> list[Point]:
    """Every plan not dominated in (blob bytes, predicted loss), smallest first.

    Args:
        layout: the blob layout.
        loss: ``loss[layer][m - 1]``, additive over layers.
        budget: drop plans over this many bytes (None: the whole front).

    Returns:
        Points with bytes strictly increasing and loss strictly decreasing; empty when nothing fits.
    """
    n = len(layout.convs)
    if len(loss) != n or any(len(row) != len(WIDTHS) for row in loss):
        raise ValueError(f"loss must be {n} rows of {len(WIDTHS)} widths")
    limit = budget if budget is not None else math.inf
    # The smallest bytes the layers after each one can still add: a lower bound (alignment >= 0).
    rest_min = [0] * (n + 1)
    for index in range(n - 1, -1, -1):
        rest_min[index] = rest_min[index + 1] + min(layout.payload(index, m) for m in WIDTHS)
    ends = np.array([layout.table_end], dtype=np.int64)
    losses = np.zeros(1)
    plans = np.zeros((1, 0), dtype=np.int8)
    align = C.ALIGNMENT
    for index in range(n):
        start = -(-ends // align) * align
        new_ends = np.concatenate([start + layout.payload(index, m) for m in WIDTHS])
        new_losses = np.concatenate([losses + float(loss[index][m - 1]) for m in WIDTHS])
        new_plans = np.concatenate(
            [np.hstack([plans, np.full((len(plans), 1), m, np.int8)]) for m in WIDTHS]
        )
        fits = new_ends + rest_min[index + 1] <= limit
        ends, losses, plans = _non_dominated(new_ends[fits], new_losses[fits], new_plans[fits])
    return [Point(tuple(int(b) for b in p), int(e), float(v)) for e, v, p in zip(ends, losses, plans)]


def _non_dominated(ends: np.ndarray, losses: np.ndarray, plans: np.ndarray):
    """The labels no other label dominates, ordered by end offset (ties: the first plan in order)."""
    if len(ends) == 0:
        return ends, losses, plans
    # Sort by offset, then loss, then the plan itself (deterministic among exact ties).
    keys = [plans[:, j] for j in range(plans.shape[1] - 1, -1, -1)] + [losses, ends]
    order = np.lexsort(keys)
    ends, losses, plans = ends[order], losses[order], plans[order]
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(losses)[:-1]])
    keep = losses < best_before
    return ends[keep], losses[keep], plans[keep]


def best_plan(layout: Layout, loss: Sequence[Sequence[float]], budget: int) -> tuple[Point, list[Point]]:
    """The plan of least predicted loss whose blob fits `budget` bytes, and the front within it.

    Raises:
        BudgetError: not even 1 bit everywhere fits.
    """
    front = pareto_front(layout, loss, budget)
    if not front:
        smallest = blob_bytes(layout, [C.MIN_MASK_BITS] * len(layout.convs))
        raise BudgetError(f"--budget {budget:,} B: the smallest blob (1 bit everywhere) is {smallest:,} B")
    return front[-1], front


def plan_text(layout: Layout, plan: Sequence[int]) -> str:
    """The shortest plan string `chipq.quant.plan.parse_plan` reads back as `plan` (runs form).

    >>> plan_text(Layout(4, (("a", 1, 1), ("b", 1, 1), ("c", 1, 1)), (0, 1, 2)), [3, 3, 1])
    '3x2,1x1'
    """
    runs: list[list[int]] = []
    for bits in plan:
        if runs and runs[-1][0] == bits:
            runs[-1][1] += 1
        else:
            runs.append([bits, 1])
    return ",".join(f"{bits}x{count}" for bits, count in runs)
