"""Plans: how each conv layer is stored — mask bits, and (chip format v2) alpha width and kernels kept.

A layer's setting is written ``BITS[aALPHA][kKEEP]``: ``3`` = 3-bit masks, 8-bit alpha, every kernel
(a v1 layer); ``1a5k40`` = 1-bit masks, 5-bit alpha codes (SPEC 3.4), 40 % of the kernels kept
(SPEC 3.5, a presence bitmap). A plan is one of three forms, never a mix (the three answer different
questions, and a mix would need precedence rules nobody remembers):

- runs, ``SETTINGxCOUNT`` items in layer order: ``3x7,1x6`` = 3 bits on the first 7 convs, 1 on the
  next 6; ``3x7,1a5k40x6``;
- a per-layer list: ``3,3,3,3,3,3,3,1,1,1,1,1,1``;
- per-layer names: ``conv1_1=3,conv1_2=3,...`` naming every conv layer exactly once, in any order.

Every form must cover every conv layer exactly; mask widths are 1..5 (SPEC 3.3), alpha widths 1..8,
kept shares 1..100 %. Spaces around items are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chipq.errors import UsageError
from chipq.formats.constants import ALPHA_BITS, MAX_MASK_BITS, MIN_ALPHA_BITS, MIN_MASK_BITS

PAPER_PLAN = "3x7,1x6"  # the paper's plan: 3-bit masks on conv1_1..conv3_3, 1-bit on conv4_1..conv5_3

_SETTING = r"\d+(?:a\d+)?(?:k\d+)?"
_RUN = re.compile(rf"^({_SETTING})x(\d+)$")
_NUMBER = re.compile(rf"^{_SETTING}$")
_NAMED = re.compile(rf"^([A-Za-z0-9_.-]+)=({_SETTING})$")
_PARTS = re.compile(r"^(\d+)(?:a(\d+))?(?:k(\d+))?$")


@dataclass(frozen=True, order=True)
class LayerSpec:
    """How one conv layer is stored.

    Attributes:
        bits: mask bits m, 1..5.
        alpha_bits: width of the stored alpha code, 1..8 (8 = v1).
        keep: percent of the layer's kernels kept, 1..100 (100 = no presence bitmap, v1).
    """

    bits: int
    alpha_bits: int = ALPHA_BITS
    keep: int = 100

    @property
    def uses_v2(self) -> bool:
        return self.alpha_bits != ALPHA_BITS or self.keep != 100

    def kept(self, kernels: int) -> int:
        """Kernels kept of a layer with `kernels` (rounded half up; at least one).

        >>> LayerSpec(1, keep=40).kept(10), LayerSpec(1).kept(7), LayerSpec(1, keep=1).kept(5)
        (4, 7, 1)
        """
        return max(1, (kernels * self.keep + 50) // 100)

    def __str__(self) -> str:
        """The item text `parse_plan` reads back.

        >>> str(LayerSpec(3)), str(LayerSpec(1, 5, 40))
        ('3', '1a5k40')
        """
        text = str(self.bits)
        if self.alpha_bits != ALPHA_BITS:
            text += f"a{self.alpha_bits}"
        if self.keep != 100:
            text += f"k{self.keep}"
        return text


class PlanError(UsageError):
    """A plan that does not parse, or does not cover the model's conv layers exactly."""


def _bits(value: str, where: str) -> LayerSpec:
    bits, alpha, keep = _PARTS.match(value).groups()  # type: ignore[union-attr]
    checks = (
        ("mask width", bits, MIN_MASK_BITS, MAX_MASK_BITS),
        ("alpha width", alpha, MIN_ALPHA_BITS, ALPHA_BITS),
        ("kept share", keep, 1, 100),
    )
    for what, text, low, high in checks:
        if text is not None and not low <= int(text) <= high:
            raise PlanError(f"plan item {where!r}: {what} {int(text)} not in {low}..{high}")
    return LayerSpec(int(bits), int(alpha or ALPHA_BITS), int(keep or 100))


def _form(item: str) -> str:
    if _RUN.match(item):
        return "runs"
    if _NUMBER.match(item):
        return "list"
    if _NAMED.match(item):
        return "names"
    raise PlanError(f"plan item {item!r}: expected SETTINGxCOUNT, SETTING or NAME=SETTING (SETTING: BITS[aALPHA][kKEEP])")


def _check_count(count: int, conv_names: list[str]) -> None:
    if count != len(conv_names):
        raise PlanError(f"plan covers {count} layers, the model has {len(conv_names)} conv layers")


def _from_names(items: list[str], conv_names: list[str]) -> list[LayerSpec]:
    chosen: dict[str, LayerSpec] = {}
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
    """The mask width of every conv layer, in layer order; a plan with v2 settings is refused.

    For callers that store v1 layers only; `parse_specs` reads every setting.

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
    specs = parse_specs(text, conv_names)
    v2 = [str(spec) for spec in specs if spec.uses_v2]
    if v2:
        raise PlanError(f"plan {text!r}: {v2[0]} needs chip format v2 (alpha width or kept share), not allowed here")
    return [spec.bits for spec in specs]


def parse_specs(text: str, conv_names: list[str]) -> list[LayerSpec]:
    """The setting of every conv layer, in layer order (forms in the module docstring).

    Raises:
        PlanError: unparsable, mixed forms, a field out of range, or not covering every layer once.

    >>> [str(s) for s in parse_specs("3x2,1a5k40x3", [f"c{i}" for i in range(5)])]
    ['3', '3', '1a5k40', '1a5k40', '1a5k40']
    >>> parse_specs("1a9", ["c0"])
    Traceback (most recent call last):
    ...
    chipq.quant.plan.PlanError: plan item '1a9': alpha width 9 not in 1..8
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
