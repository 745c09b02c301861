"""`chipq.pipeline.plan`: the order of the planner's stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from floatcraft import random_stack

from chipq.pipeline import plan as plan_pipeline


def test_the_sensitivitys_freed_memory_is_given_back_before_the_check(tmp_path, monkeypatch):
    """Under the heavy commands' allocator settings the sensitivity's freed maps stay resident; the
    check's compress started on top of them (VGG-16: 2.1 GB, against 1.8 GB for the sensitivity)."""
    calls = []
    measure = plan_pipeline.measure_sensitivity

    def sensitivity(*args, **kwargs):
        result = measure(*args, **kwargs)
        calls.append("sensitivity")
        return result

    monkeypatch.setattr(plan_pipeline, "measure_sensitivity", sensitivity)
    monkeypatch.setattr(plan_pipeline, "release_freed_memory", lambda: calls.append("release"))
    monkeypatch.setattr(plan_pipeline, "_measure", lambda *args: calls.append("check") or {"cosine": 1.0})
    stack = random_stack([6, "M", 8], seed=3)
    calib = np.random.default_rng(1).integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    plan_pipeline.make_plan(stack, "100kB", calib, [Path("heldout.png")], sens_images=1, cache_dir=tmp_path, kind="weight-only")
    assert calls == ["sensitivity", "release", "check"]
