"""Exact blob sizes of every plan, and the knapsack: optimal against brute force, the front, budgets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from floatcraft import random_stack

from chipq.formats.writer import to_bytes
from chipq.quant import allocate
from chipq.quant.allocate import BudgetError, Layout, best_plan, blob_bytes, pareto_front, parse_budget, plan_text
from chipq.quant.compress import compress
from chipq.quant.plan import parse_plan

# Odd channel counts, so mask regions end off the 8-byte grid and alignment gaps depend on the plan.
CFG = [3, 5, "M", 7, "M", 6]


def test_blob_bytes_equals_the_written_blob_for_every_plan():
    stack = random_stack(CFG, seed=3)
    layout = Layout.of(stack)
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    plans = [[m] * 4 for m in allocate.WIDTHS] + [list(rng.integers(1, 6, 4)) for _ in range(12)]
    gaps = set()
    for plan in plans:
        model = compress(stack, [int(b) for b in plan], calib, (16, 16)).model
        assert blob_bytes(layout, plan) == len(to_bytes(model)), plan
        gaps.add(blob_bytes(layout, plan) - layout.table_end - sum(layout.payload(i, b) for i, b in enumerate(plan)))
    assert len(gaps) > 1  # the alignment padding really varies with the plan


def test_blob_bytes_of_the_paper_plan_on_vgg16_shapes():
    """VGG-16's shapes (no weights needed): 3x7,1x6 is the paper's 3,914,104 bytes."""
    from chipq.floatnet.model import FloatConv, FloatPool, FloatStack

    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    layers, cin, block, index = [], 3, 1, 0
    for value in cfg:
        if value == "M":
            layers.append(FloatPool(f"pool{block}"))
            block, index = block + 1, 0
            continue
        index += 1
        layers.append(FloatConv(f"conv{block}_{index}", np.zeros((value, cin, 1, 1), np.float32), np.zeros(value, np.float32)))
        cin = value
    layout = Layout.of(FloatStack(layers))
    assert blob_bytes(layout, [3] * 7 + [1] * 6) == 3_914_104
    assert layout.fp32_weight_bytes() == 58_841_856


def _random_layout(rng, n):
    channels = [3] + [int(c) for c in rng.integers(1, 9, n)]
    convs = tuple((f"conv1_{i + 1}", channels[i + 1], channels[i]) for i in range(n))
    return Layout(n, convs, tuple(range(n)))


def _brute(layout, loss):
    points = []
    for plan in itertools.product(allocate.WIDTHS, repeat=len(layout.convs)):
        points.append((blob_bytes(layout, plan), sum(loss[i][m - 1] for i, m in enumerate(plan)), plan))
    return points


@pytest.mark.parametrize("seed", range(8))
def test_dp_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 3 + seed % 2
    layout = _random_layout(rng, n)
    loss = rng.random((n, 5)).tolist()  # not monotone in m: the search must not assume it
    points = _brute(layout, loss)
    sizes = sorted({p[0] for p in points})
    for budget in [sizes[0], sizes[len(sizes) // 3], sizes[len(sizes) // 2] + 3, sizes[-1]]:
        best, front = best_plan(layout, loss, budget)
        optimum = min(p[1] for p in points if p[0] <= budget)
        assert best.bytes <= budget
        assert best.bytes == blob_bytes(layout, best.plan)
        assert best.loss == pytest.approx(optimum, abs=1e-12)
        assert all(point.bytes <= budget for point in front)
    # The whole front: exactly the brute-force non-dominated (size, loss) pairs.
    want = []
    for size, value, _ in sorted(points, key=lambda p: (p[0], p[1])):
        if not want or value < want[-1][1] - 1e-12:
            want.append((size, value))
    got = [(p.bytes, p.loss) for p in pareto_front(layout, loss)]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert np.allclose([g[1] for g in got], [w[1] for w in want])


def test_front_is_strictly_monotone_and_plans_match_their_costs():
    rng = np.random.default_rng(11)
    layout = _random_layout(rng, 6)
    loss = np.sort(rng.random((6, 5)), axis=1)[:, ::-1].tolist()
    front = pareto_front(layout, loss)
    assert all(a.bytes < b.bytes and a.loss > b.loss for a, b in zip(front, front[1:]))
    for point in front:
        assert point.bytes == blob_bytes(layout, point.plan)
        assert point.loss == pytest.approx(sum(loss[i][m - 1] for i, m in enumerate(point.plan)))


def test_budget_below_the_smallest_blob_is_refused():
    layout = _random_layout(np.random.default_rng(1), 3)
    smallest = blob_bytes(layout, [1, 1, 1])
    with pytest.raises(BudgetError, match="smallest blob"):
        best_plan(layout, [[0.0] * 5] * 3, smallest - 1)
    assert best_plan(layout, [[0.0] * 5] * 3, smallest)[0].plan == (1, 1, 1)


def test_parse_budget_forms_and_errors():
    layout = Layout.of(random_stack(CFG))
    fp32 = layout.fp32_weight_bytes()
    assert parse_budget("3914104", layout) == 3914104
    assert parse_budget("4MB", layout) == 4_000_000
    assert parse_budget("3.5 mb", layout) == 3_500_000
    assert parse_budget("2MiB", layout) == 2 * 2**20
    assert parse_budget("12kB", layout) == 12_000
    assert parse_budget("15x", layout) == fp32 // 15
    assert parse_budget("2.5X", layout) == int(fp32 // 2.5)
    for bad in ["", "4 parsecs", "-3", "0", "x", "0x", "abcx", "1e9", "4MB5"]:
        with pytest.raises(BudgetError):
            parse_budget(bad, layout)


def test_plan_text_round_trips_through_parse_plan():
    rng = np.random.default_rng(5)
    names = [f"c{i}" for i in range(13)]
    layout = Layout(13, tuple((n, 1, 1) for n in names), tuple(range(13)))
    for _ in range(50):
        plan = [int(b) for b in rng.integers(1, 6, 13)]
        assert parse_plan(plan_text(layout, plan), names) == plan
    assert plan_text(layout, [3] * 7 + [1] * 6) == "3x7,1x6"
