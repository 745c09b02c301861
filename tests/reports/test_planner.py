"""The planner behind `chipq plan`: which photos the sensitivity reads, and the front picture."""

from __future__ import annotations

import numpy as np
import pytest
from floatcraft import random_stack

from chipq.pipeline.plan import make_plan
from chipq.reports import planner


def test_make_plan_records_the_kind_and_the_front_plot_takes_measured_points(tmp_path):
    pytest.importorskip("matplotlib")
    stack = random_stack([6, "M", 8], seed=3)
    rng = np.random.default_rng(1)
    calib = rng.integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    result = make_plan(stack, "100kB", calib, [], sens_images=1, cache_dir=tmp_path, kind="weight-only")
    data = result.to_json()
    assert data["sensitivity"]["kind"] == "weight-only" and data["sensitivity"]["first_image"] == 0
    assert data["measured"] is None and data["bytes"] <= 100_000
    png = tmp_path / "front.png"
    planner.plot_front(result, png, [(data["front"][0]["bytes"], 0.5)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(planner.UsageError, match="sensitivity"):
        make_plan(stack, "100kB", calib, [], sens_images=1, cache_dir=tmp_path, kind="exact")


def test_the_probe_choice_has_one_home():
    """`chipq.quant.PROBE` is the default of `chipq plan --probe`, of `compress --budget` and of the
    measurement itself; every name the CLI offers maps to the measurement's Probe of that name."""
    from chipq import quant
    from chipq.quant import sensitivity

    assert tuple(probe.value for probe in planner.SensitivityProbe) == quant.PROBES
    assert planner.SensitivityProbe.default().value == quant.PROBE
    assert planner.SensitivityProbe.default().probe() is sensitivity.DEFAULT_PROBE
    for probe in planner.SensitivityProbe:
        assert planner.SensitivityProbe.of_method(probe.probe().name()) is probe
