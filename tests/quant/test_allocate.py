"""Exact blob sizes of every plan (v1 and v2 settings), and the knapsack: optimal against brute force,
the front, budgets."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from floatcraft import random_stack

from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes
from chipq.quant import allocate
from chipq.quant.allocate import BudgetError, Layout, best_plan, blob_bytes, pareto_front, parse_budget, plan_text
from chipq.quant.compress import compress
from chipq.quant.plan import LayerSpec, parse_plan, parse_specs

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


def test_blob_bytes_equals_the_quantizers_v2_blob():
    """Random v2 plans through the quantizer (`chipq.quant.compress` with LayerSpecs): planned == written."""
    stack = random_stack(CFG, seed=4)
    layout = Layout.of(stack)
    rng = np.random.default_rng(1)
    calib = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    for _ in range(8):
        plan = [LayerSpec(int(rng.integers(1, 6)), int(rng.choice([8, 6, 4, 2])), int(rng.choice([100, 75, 40, 10]))) for _ in range(4)]
        model = compress(stack, plan, calib, (16, 16), reconstruction=None).model
        assert blob_bytes(layout, plan) == len(to_bytes(model)), plan


def _vgg16_layout():
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
    return Layout.of(FloatStack(layers))


def test_blob_bytes_of_the_paper_plan_on_vgg16_shapes():
    """VGG-16's shapes (no weights needed): 3x7,1x6 is the paper's 3,914,104 bytes, 1 bit
    everywhere 3,480,520; with 4-bit alpha and 40 % of the kernels on conv4/5 a blob fits 2 MB."""
    layout = _vgg16_layout()
    assert blob_bytes(layout, [3] * 7 + [1] * 6) == 3_914_104
    assert layout.fp32_weight_bytes() == 58_841_856
    assert blob_bytes(layout, [1] * 13) == 3_480_520
    assert sum(layout.kernels(i) for i in range(13)) == 1_634_496
    specs = parse_specs("2a6x7,1a4k40x6", [name for name, _, _ in layout.convs])
    assert blob_bytes(layout, specs) < 2_000_000


def _with_plan(model, specs, seed=0):
    """`model` stored as `specs`: alpha codes of the spec's width, exactly `LayerSpec.kept` kernels
    present (the rule the quantizer follows), absent kernels zero."""
    rng = np.random.default_rng(seed)
    layers, index = [], 0
    for layer in model.layers:
        if not hasattr(layer, "mask_bits"):
            layers.append(layer)
            continue
        spec = specs[index]
        index += 1
        step = 1 << (8 - spec.alpha_bits)
        alpha = (np.maximum(layer.alpha // step, 1) * step).astype(np.uint8)
        mask, present = layer.mask, None
        if spec.keep != 100:
            kernels = alpha.size
            present = np.zeros(kernels, bool)
            present[rng.permutation(kernels)[: spec.kept(kernels)]] = True
            present = present.reshape(alpha.shape)
            alpha = np.where(present, alpha, 0).astype(np.uint8)
            mask = np.where(present[:, :, None, None], mask, 0).astype(np.uint8)
        layers.append(replace(layer, alpha=alpha, mask=mask, alpha_bits=spec.alpha_bits, present=present))
    return replace(model, layers=tuple(layers))


def test_blob_bytes_equals_the_written_v2_blob_for_random_plans():
    """Random v2 plans (alpha widths, kept shares, mask bits) on odd channel counts: the planned size
    is the size of the blob the writer makes, byte for byte."""
    channels = [5, 7, "M", 9, 11, "M", 6]
    stack_layout = Layout(7, tuple((f"c{i}", c, p) for i, (c, p) in enumerate(zip([5, 7, 9, 11, 6], [3, 5, 7, 9, 11]))), (0, 1, 3, 4, 6))
    rng = np.random.default_rng(7)
    sizes = set()
    for trial in range(30):
        specs = [
            LayerSpec(int(rng.integers(1, 6)), int(rng.choice([8, 7, 6, 5, 4, 3, 1])), int(rng.choice([100, 90, 75, 50, 33, 10, 1])))
            for _ in range(5)
        ]
        model = _with_plan(random_model([s.bits for s in specs], channels, input_hw=(16, 16), seed=trial), specs, trial)
        assert blob_bytes(stack_layout, specs) == len(to_bytes(model)), specs
        sizes.add(blob_bytes(stack_layout, specs))
    assert len(sizes) > 20


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
        assert point.loss == pytest.approx(sum(loss[i][m - 1] for i, m in enumerate(point.bits)))


def test_budget_below_the_smallest_blob_is_refused():
    layout = _random_layout(np.random.default_rng(1), 3)
    smallest = blob_bytes(layout, [1, 1, 1])
    with pytest.raises(BudgetError, match="smallest blob"):
        best_plan(layout, [[0.0] * 5] * 3, smallest - 1)
    assert best_plan(layout, [[0.0] * 5] * 3, smallest)[0].bits == [1, 1, 1]


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


def _spec_brute(layout, costs):
    rows = [list(row.items()) for row in costs]
    points = []
    for combo in itertools.product(*rows):
        plan = [spec for spec, _ in combo]
        points.append((blob_bytes(layout, plan), sum(loss for _, loss in combo)))
    return points


@pytest.mark.parametrize("seed", range(6))
def test_dp_with_v2_settings_is_optimal_against_brute_force(seed):
    """Per-layer candidate sets with alpha widths and kept shares (different per layer, some
    dominated): the best plan under each budget and the whole front equal brute force."""
    rng = np.random.default_rng(100 + seed)
    layout = _random_layout(rng, 3)
    pool = [LayerSpec(m, a, k) for m in (1, 2, 3) for a in (8, 5, 3) for k in (100, 60, 25)]
    costs = []
    for _ in range(3):
        picks = rng.choice(len(pool), size=int(rng.integers(3, 9)), replace=False)
        costs.append({pool[i]: float(rng.random()) for i in picks})
    points = _spec_brute(layout, costs)
    sizes = sorted({p[0] for p in points})
    for budget in [sizes[0], sizes[len(sizes) // 2] + 1, sizes[-1]]:
        best, _ = best_plan(layout, costs, budget)
        assert best.bytes == blob_bytes(layout, best.plan) <= budget
        assert best.loss == pytest.approx(min(v for b, v in points if b <= budget), abs=1e-12)
        assert all(spec in costs[i] for i, spec in enumerate(best.plan))
    want = []
    for size, value in sorted(points):
        if not want or value < want[-1][1] - 1e-12:
            want.append((size, value))
    got = [(p.bytes, p.loss) for p in pareto_front(layout, costs)]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert np.allclose([g[1] for g in got], [w[1] for w in want])


def test_smallest_v2_blob_is_named_in_the_refusal():
    layout = _random_layout(np.random.default_rng(2), 2)
    costs = [{LayerSpec(1): 0.0, LayerSpec(1, 4, 50): 1.0}] * 2
    smallest = blob_bytes(layout, [LayerSpec(1, 4, 50)] * 2)
    with pytest.raises(BudgetError, match=r"smallest blob \(1a4k50x2\)"):
        best_plan(layout, costs, smallest - 1)
    assert best_plan(layout, costs, smallest)[0].plan == (LayerSpec(1, 4, 50),) * 2


def test_plan_text_of_v2_settings_round_trips_through_parse_specs():
    rng = np.random.default_rng(6)
    names = [f"c{i}" for i in range(13)]
    layout = Layout(13, tuple((n, 1, 1) for n in names), tuple(range(13)))
    choices = [LayerSpec(1), LayerSpec(3), LayerSpec(1, 5), LayerSpec(1, 5, 40), LayerSpec(2, keep=75)]
    for _ in range(50):
        plan = [choices[i] for i in rng.integers(0, len(choices), 13)]
        text = plan_text(layout, plan)
        assert parse_specs(text, names) == plan
        assert len(text.split(",")) == 1 + sum(a != b for a, b in zip(plan, plan[1:]))  # runs: shortest
    assert plan_text(layout, [LayerSpec(3)] * 7 + [LayerSpec(1, 5, 40)] * 6) == "3x7,1a5k40x6"


def test_plan_text_round_trips_through_parse_plan():
    rng = np.random.default_rng(5)
    names = [f"c{i}" for i in range(13)]
    layout = Layout(13, tuple((n, 1, 1) for n in names), tuple(range(13)))
    for _ in range(50):
        plan = [int(b) for b in rng.integers(1, 6, 13)]
        assert parse_plan(plan_text(layout, plan), names) == plan
    assert plan_text(layout, [3] * 7 + [1] * 6) == "3x7,1x6"
