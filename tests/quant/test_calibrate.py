"""Activation calibration: the least-squared-error choice of fraction bits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chipq.quant.calibrate import MAX_SAMPLES, choose_frac, choose_fracs, quantize_activations, subsample


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, 50, elements=st.floats(0, 1e3)))
def test_chosen_frac_is_no_worse_than_its_neighbours(x):
    """The chosen f has the least squared error among f-1, f, f+1 (within the candidate range)."""
    f = choose_frac(x)

    def err(g):
        return np.mean((quantize_activations(x, g) - x) ** 2)

    peak = x.max()
    if peak > 2.0**-31:
        no_clip = int(np.floor(np.log2(255 / peak)))
        for g in (f - 1, f + 1):
            if no_clip <= g <= no_clip + 4:
                assert err(f) <= err(g)


def test_largest_value_fits_when_it_dominates():
    x = np.array([0.0] * 10 + [100.0])
    f = choose_frac(x)
    assert quantize_activations(x, f)[-1] == 100.0  # 100 * 2^f <= 255 with f = 1


def test_subsample_is_bounded_and_deterministic():
    x = np.arange(3 * MAX_SAMPLES)
    a, b = subsample(x), subsample(x)
    assert len(a) <= MAX_SAMPLES and np.array_equal(a, b)


def test_choose_fracs_one_per_layer():
    assert choose_fracs([np.ones(4), np.full(4, 0.01)]) == [7, 14]
