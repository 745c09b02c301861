"""Mask-width plans: three forms, exact coverage, widths 1..5."""

from __future__ import annotations

import doctest
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

import chipq.quant.plan
from chipq.errors import UsageError
from chipq.quant.plan import PlanError, parse_plan

VGG16 = [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)]
widths = st.integers(min_value=1, max_value=5)


def test_doctests():
    assert doctest.testmod(chipq.quant.plan).failed == 0


def test_the_papers_plan():
    assert parse_plan("3x7,1x6", VGG16) == [3] * 7 + [1] * 6
    assert parse_plan("3,3,3,3,3,3,3,1,1,1,1,1,1", VGG16) == [3] * 7 + [1] * 6
    named = ",".join(f"{name}={3 if i < 7 else 1}" for i, name in enumerate(VGG16))
    assert parse_plan(named, VGG16) == [3] * 7 + [1] * 6


@given(st.lists(widths, min_size=1, max_size=20))
def test_runs_and_lists_read_back_what_they_encode(bits):
    """Property: the run-length encoding and the plain list of any widths parse back to the widths."""
    names = [f"c{i}" for i in range(len(bits))]
    runs = ",".join(f"{b}x{len(list(group))}" for b, group in itertools.groupby(bits))
    assert parse_plan(runs, names) == bits
    assert parse_plan(", ".join(map(str, bits)), names) == bits


@given(st.lists(widths, min_size=1, max_size=13), st.randoms())
def test_names_in_any_order_give_layer_order(bits, rnd):
    """Property: a names plan is order-free; the result follows the model's layer order."""
    names = VGG16[: len(bits)]
    items = [f"{n}={b}" for n, b in zip(names, bits)]
    rnd.shuffle(items)
    assert parse_plan(",".join(items), names) == bits


@pytest.mark.parametrize(
    "text, message",
    [
        ("3x6,1x6", "plan covers 12 layers, the model has 13 conv layers"),
        ("3x7,1x7", "plan covers 14 layers, the model has 13 conv layers"),
        ("3,3,3", "plan covers 3 layers, the model has 13 conv layers"),
        ("6x13", "mask width 6 not in 1..5"),
        ("0x13", "mask width 0 not in 1..5"),
        ("3x0,3x13", "a run of 0 layers"),
        ("3x7,conv5_3=1", "mixes forms"),
        ("", "empty item"),
        ("3x7,,1x6", "empty item"),
        ("3x7;1x6", "expected SETTINGxCOUNT, SETTING or NAME=SETTING"),
        ("conv6_1=2", "no such conv layer"),
        ("conv1_1=2,conv1_1=3", "plan sets conv1_1 twice"),
        ("conv1_1=2", "plan leaves 12 conv layers unset: conv1_2,"),
    ],
)
def test_bad_plans_say_what_is_wrong(text, message):
    with pytest.raises(PlanError, match=message) as exc_info:
        parse_plan(text, VGG16)
    assert isinstance(exc_info.value, UsageError) and exc_info.value.exit_code == 2


def test_a_huge_count_is_refused_without_expanding_it():
    with pytest.raises(PlanError, match="plan covers 1000000000000 layers"):
        parse_plan("3x1000000000000", VGG16)
