"""Each conv layer's setting under a byte budget: exact blob sizes and an exact knapsack.

A setting is a `chipq.quant.plan.LayerSpec`: mask bits m, and in chip format v2 the alpha width a
and the share of kernels kept (SPEC 3.4, 3.5). A bare int is read as ``LayerSpec(m)`` (v1).

**Cost.** The blob of a plan is the 64-byte header, one 48-byte record per layer, and each conv
payload (presence, alpha, bias and mask regions, `chipq.formats.packing.conv_payload_size`, the one
home of the byte rules) at the first 8-byte-aligned offset after the previous one (SPEC 2, 3;
`chipq.formats.writer.to_bytes`). A kept share becomes a kernel count by `LayerSpec.kept`, the one
rule the quantizer follows too; ``keep = 100`` is a layer without a presence bitmap. `blob_bytes`
computes exactly that; nothing in it depends on weight values, so the size of every plan is known
before anything is quantized. Because of the alignment gaps a layer's cost depends on where the
previous payload ended, so sizes do not simply add — the search below works on exact end offsets
and never on an approximation.

**Search.** One setting per conv layer out of that layer's candidates, minimising an additive loss
(`chipq.quant.sensitivity` says why it adds) subject to ``blob bytes <= budget``. First, within a
layer, a candidate that costs no fewer bytes and no less loss than another is dropped (exact: the
other can replace it in any plan at no larger size). Then a dynamic programme over the layers keeps,
after each layer, the *labels* (end offset, loss so far) that no other label dominates (an offset no
larger and a loss no larger), each with a back-pointer to its plan. Dropping dominated labels is
exact: the next payload starts at ``align_up(offset)``, which never decreases as the offset grows,
so whatever continues a dominated label continues its dominator at no larger size and the same added
loss. The labels left after the last layer are the whole Pareto front of size against predicted
loss, and the best plan under any budget is the front's last point that fits it. Labels that cannot
fit the budget even with every later layer at its smallest candidate are dropped on the way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chipq.errors import UsageError
from chipq.floatnet.model import FloatConv, FloatPool, FloatStack
from chipq.formats import constants as C
from chipq.formats.packing import conv_payload_size
from chipq.formats.reader import first_payload_offset
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import as_spec

WIDTHS = tuple(range(C.MIN_MASK_BITS, C.MAX_MASK_BITS + 1))
FP32_BYTES = 4

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}

Setting = LayerSpec | int  # an int is the v1 setting LayerSpec(m)


class BudgetError(UsageError):
    """A budget that does not parse, or that no plan fits."""


def stored_kernels(spec: LayerSpec, kernels: int) -> int | None:
    """The `kept` argument of `conv_payload_size`: None without a presence bitmap (keep 100),
    else `LayerSpec.kept` (the one rule)."""
    return None if spec.keep == 100 else spec.kept(kernels)


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

    def kernels(self, index: int) -> int:
        """O * I of conv `index`."""
        _, out_ch, in_ch = self.convs[index]
        return out_ch * in_ch

    def payload(self, index: int, setting: Setting) -> int:
        """Bytes of conv `index`'s payload stored as `setting` (presence + alpha + bias + mask)."""
        spec = as_spec(setting)
        _, out_ch, in_ch = self.convs[index]
        return conv_payload_size(out_ch, in_ch, spec.bits, spec.alpha_bits, stored_kernels(spec, out_ch * in_ch))

    def fp32_weight_bytes(self) -> int:
        """fp32 bytes of all conv weights (no biases), the numerator of every chipq ratio."""
        return sum(out_ch * in_ch * C.KERNEL_TAPS * FP32_BYTES for _, out_ch, in_ch in self.convs)


def blob_bytes(layout: Layout, plan: Sequence[Setting]) -> int:
    """The exact size of the blob of `plan` (equals ``len(to_bytes(model))``)."""
    if len(plan) != len(layout.convs):
        raise ValueError(f"plan has {len(plan)} settings for {len(layout.convs)} conv layers")
    end = layout.table_end
    for index, setting in enumerate(plan):
        end = first_payload_offset(end) + layout.payload(index, setting)
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
    """One plan on the front: its settings, exact blob bytes and predicted loss."""

    plan: tuple[LayerSpec, ...]
    bytes: int
    loss: float

    @property
    def bits(self) -> list[int]:
        """The mask bits of each layer."""
        return [spec.bits for spec in self.plan]

    @property
    def uses_v2(self) -> bool:
        return any(spec.uses_v2 for spec in self.plan)


Costs = Sequence[Mapping[Setting, float] | Sequence[float]]


def layer_options(layout: Layout, costs: Costs) -> list[list[tuple[LayerSpec, int, float]]]:
    """Each layer's candidates as (setting, payload bytes, loss), the dominated ones dropped.

    A row of `costs` is a mapping setting -> loss, or (v1) a list of five losses for m = 1..5.
    Within a layer a candidate is dropped when another has no more payload bytes and no more loss
    (ties keep the smallest setting): exact, see the module docstring.
    """
    n = len(layout.convs)
    if len(costs) != n:
        raise ValueError(f"costs must have {n} rows (one per conv layer), not {len(costs)}")
    options = []
    for index, row in enumerate(costs):
        if isinstance(row, Mapping):
            items = [(as_spec(k), float(v)) for k, v in row.items()]
        elif len(row) == len(WIDTHS):
            items = [(LayerSpec(m), float(v)) for m, v in zip(WIDTHS, row)]
        else:
            raise ValueError(f"row {index}: expected a mapping setting -> loss or {len(WIDTHS)} losses")
        if not items:
            raise ValueError(f"row {index}: no candidate setting")
        ranked = sorted((layout.payload(index, spec), loss, spec) for spec, loss in items)
        kept, best = [], math.inf
        for size, loss, spec in ranked:
            if loss < best:
                kept.append((spec, size, loss))
                best = loss
        options.append(kept)
    return options


def pareto_front(layout: Layout, costs: Costs, budget: int | None = None) -> list[Point]:
    """Every plan not dominated in (blob bytes, predicted loss), smallest first.

    Args:
        layout: the blob layout.
        costs: per layer, setting -> loss (additive over layers); or ``loss[layer][m - 1]``.
        budget: drop plans over this many bytes (None: the whole front).

    Returns:
        Points with bytes strictly increasing and loss strictly decreasing; empty when nothing fits.
    """
    options = layer_options(layout, costs)
    n = len(options)
    limit = budget if budget is not None else math.inf
    # The smallest bytes the layers after each one can still add: a lower bound (alignment >= 0).
    rest_min = [0] * (n + 1)
    for index in range(n - 1, -1, -1):
        rest_min[index] = rest_min[index + 1] + min(size for _, size, _ in options[index])
    ends = np.array([layout.table_end], dtype=np.int64)
    losses = np.zeros(1)
    parents: list[tuple[np.ndarray, np.ndarray]] = []  # per layer: (label's parent, its option)
    for index in range(n):
        start = -(-ends // C.ALIGNMENT) * C.ALIGNMENT
        sizes = np.array([size for _, size, _ in options[index]], dtype=np.int64)
        extra = np.array([loss for _, _, loss in options[index]])
        new_ends = (start[:, None] + sizes[None, :]).reshape(-1)
        new_losses = (losses[:, None] + extra[None, :]).reshape(-1)
        parent = np.repeat(np.arange(len(ends)), len(sizes))
        choice = np.tile(np.arange(len(sizes)), len(ends))
        fits = new_ends + rest_min[index + 1] <= limit
        keep = _non_dominated(new_ends[fits], new_losses[fits])
        picked = np.flatnonzero(fits)[keep]
        ends, losses = new_ends[picked], new_losses[picked]
        parents.append((parent[picked], choice[picked]))
    return [
        Point(_plan_of(parents, options, label), int(ends[label]), float(losses[label])) for label in range(len(ends))
    ]


def _plan_of(parents, options, label: int) -> tuple[LayerSpec, ...]:
    """Follow the back-pointers of the last layer's `label` to its settings."""
    plan = []
    for index in range(len(parents) - 1, -1, -1):
        parent, choice = parents[index]
        plan.append(options[index][int(choice[label])][0])
        label = int(parent[label])
    return tuple(reversed(plan))


def _non_dominated(ends: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Indices of the labels no other label dominates, ordered by end offset.

    A stable sort on (offset, loss): among exact ties the first in candidate order stays, so the
    result is deterministic.
    """
    if len(ends) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort([losses, ends])
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(losses[order])[:-1]])
    return order[losses[order] < best_before]


def best_plan(layout: Layout, costs: Costs, budget: int) -> tuple[Point, list[Point]]:
    """The plan of least predicted loss whose blob fits `budget` bytes, and the front within it.

    Raises:
        BudgetError: not even the smallest candidate of every layer fits.
    """
    front = pareto_front(layout, costs, budget)
    if not front:
        smallest = smallest_plan(layout, costs)
        raise BudgetError(
            f"--budget {budget:,} B: the smallest blob ({plan_text(layout, smallest.plan)}) is {smallest.bytes:,} B"
        )
    return front[-1], front


def smallest_plan(layout: Layout, costs: Costs) -> Point:
    """The smallest blob the candidates allow (each layer at its fewest payload bytes)."""
    options = layer_options(layout, costs)
    plan = tuple(min(row, key=lambda option: (option[1], option[2]))[0] for row in options)
    return Point(plan, blob_bytes(layout, plan), sum(min(row, key=lambda o: (o[1], o[2]))[2] for row in options))


def plan_text(layout: Layout, plan: Sequence[Setting]) -> str:
    """The shortest plan string `chipq.quant.plan.parse_specs` reads back as `plan` (runs form).

    >>> lay = Layout(4, (("a", 1, 1), ("b", 1, 1), ("c", 1, 1)), (0, 1, 2))
    >>> plan_text(lay, [3, 3, 1]), plan_text(lay, [3, LayerSpec(1, 5, 40), LayerSpec(1, 5, 40)])
    ('3x2,1x1', '3x1,1a5k40x2')
    """
    runs: list[list] = []
    for setting in plan:
        spec = as_spec(setting)
        if runs and runs[-1][0] == spec:
            runs[-1][1] += 1
        else:
            runs.append([spec, 1])
    return ",".join(f"{spec}x{count}" for spec, count in runs)
