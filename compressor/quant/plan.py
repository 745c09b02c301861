"""Mask-width plans: how many mask bits each conv layer gets.

A plan is one of three forms, never a mix (the three answer different questions, and a mix would
need precedence rules nobody remembers):

- runs, ``BITSxCOUNT`` items in layer order: ``3x7,1x6`` = 3 bits on the first 7 convs, 1 on the
  next 6;
- a per-layer list: ``3,3,3,3,3,3,3,1,1,1,1,1,1``;
- per-layer names: ``conv1_1=3,conv1_2=3,...`` naming every conv layer exactly once, in any order.

Every form must cover every conv layer exactly; widths are 1..5 (chip format v1, SPEC.md 3.3).
Spaces around items are ignored.
"""

from __future__ import annotations

import re

from chipq.errors import UsageError
from chipq.formats.constants import MAX_MASK_BITS, MIN_MASK_BITS

PAPER_PLAN = "3x7,1x6"  # the paper's plan: 3-bit masks on conv1_1..conv3_3, 1-bit on conv4_1..conv5_3

_RUN = re.compile(r"^(\d+)x(\d+)$")
_NUMBER = re.compile(r"^\d+$")
_NAMED = re.compile(r"^([A-Za-z0-9_.-]+)=(\d+)$")


class PlanError(UsageError):
    """A plan that does not parse, or does not cover the model's conv layers exactly."""


def _bits(value: str, where: str) -> int:
    bits = int(value)
    if not MIN_MASK_BITS <= bits <= MAX_MASK_BITS:
        raise PlanError(f"plan item {where!r}: mask width {bits} not in {MIN_MASK_BITS}..{MAX_MASK_BITS}")
    return bits


def _form(item: str) -> str:
    if _RUN.match(item):
        return "runs"
    if _NUMBER.match(item):
        return "list"
    if _NAMED.match(item):
        return "names"
    raise PlanError(f"plan item {item!r}: expected BITSxCOUNT, BITS or NAME=BITS")


def _check_count(count: int, conv_names: list[str]) -> None:
    if count != len(conv_names):
        raise PlanError(f"plan covers {count} layers, the model has {len(conv_names)} conv layers")


def _from_names(items: list[str], conv_names: list[str]) -> list[int]:
    chosen: dict[str, int] = {}
    for item in items:
        match = _NAMED.match(item)
        assert match is not None  # _form checked it
        name = match.group(1)
        if name not in conv_names:
            known = f"{conv_names[0]}..{conv_names[-1]}" if conv_names else "none"
            raise PlanError(f"plan names {name!r}, the model has no such conv layer ({known})")
        if name in chosen:
            raise PlanError(f"plan sets {name} twice")
        chosen[name] = _bits(match.group(2), item)
    missing = [name for name in conv_names if name not in chosen]
    if missing:
        raise PlanError(f"plan leaves {len(missing)} conv layers unset: {', '.join(missing)}")
    return [chosen[name] for name in conv_names]


def parse_plan(text: str, conv_names: list[str]) -> list[int]:
    """The mask width of every conv layer, in layer order.

    Args:
        text: the plan (forms in the module docstring).
        conv_names: the model's conv layer names, in order.

    Raises:
        PlanError: unparsable, mixed forms, a width outside 1..5, or not covering every layer once.

    >>> names = [f"c{i}" for i in range(5)]
    >>> parse_plan("3x2,1x3", names)
    [3, 3, 1, 1, 1]
    >>> parse_plan("2, 2, 2, 1, 1", names)
    [2, 2, 2, 1, 1]
    >>> parse_plan("c4=1,c0=5,c1=4,c2=3,c3=2", names)
    [5, 4, 3, 2, 1]
    >>> parse_plan("3x4", names)
    Traceback (most recent call last):
    ...
    chipq.quant.plan.PlanError: plan covers 4 layers, the model has 5 conv layers
    >>> parse_plan("6x5", names)
    Traceback (most recent call last):
    ...
    chipq.quant.plan.PlanError: plan item '6x5': mask width 6 not in 1..5
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise PlanError(f"plan {text!r}: empty item")
    forms = {_form(item) for item in items}
    if len(forms) > 1:
        raise PlanError(f"plan {text!r} mixes forms ({', '.join(sorted(forms))}); use one")
    form = forms.pop()
    if form == "names":
        return _from_names(items, conv_names)
    if form == "list":
        bits = [_bits(item, item) for item in items]
    else:
        runs = [_RUN.match(item).groups() + (item,) for item in items]  # type: ignore[union-attr]
        for _, count, item in runs:
            if int(count) == 0:
                raise PlanError(f"plan item {item!r}: a run of 0 layers")
        # Count before expanding, so a huge count is refused without building it.
        _check_count(sum(int(count) for _, count, _ in runs), conv_names)
        bits = [b for width, count, item in runs for b in [_bits(width, item)] * int(count)]
    _check_count(len(bits), conv_names)
    return bits
