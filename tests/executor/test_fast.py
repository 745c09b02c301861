"""The fast executor equals the golden one on every element (the only test that matters)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipq.executor import golden
from chipq.executor.fast import FLOAT32_EXACT, FastExecutor, layer_bound
from chipq.formats.synthetic import random_model


@st.composite
def models_and_images(draw):
    """A random small VGG-like model and a batch of random images for it."""
    n_convs = draw(st.integers(1, 4))
    bits = draw(st.lists(st.integers(1, 5), min_size=n_convs, max_size=n_convs))
    channels: list = []
    for index in range(n_convs):
        channels.append(draw(st.integers(1, 12)))
        if index < n_convs - 1 and draw(st.booleans()):
            channels.append("M")
    pools = channels.count("M")
    side = draw(st.integers(2 ** pools, 2 ** pools * 6))
    width = draw(st.integers(2 ** pools, 2 ** pools * 6))
    model = random_model(bits, channels, input_hw=(side, width), seed=draw(st.integers(0, 2**16)))
    batch = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    images = np.random.default_rng(seed).integers(0, 256, (batch, 3, side, width), dtype=np.uint8)
    # extremes: all-white and all-black images push the accumulators to their bounds
    images[0, :, : side // 2] = draw(st.sampled_from([0, 255]))
    return model, images


@settings(max_examples=60, deadline=None)
@given(models_and_images())
def test_fast_equals_golden_on_every_layer(case):
    """For any valid model and any uint8 images, every layer's output is equal element for element."""
    model, images = case
    fast_taps = FastExecutor(model, batch=2).run(images, taps=True)
    for index, image in enumerate(images):
        for fast, gold in zip(fast_taps, golden.run(model, image, taps=True)):
            assert fast.dtype == np.uint8
            np.testing.assert_array_equal(fast[index], gold)


def test_float64_path_is_taken_and_exact_when_float32_is_not():
    # 5-bit masks and wide layers: the bound exceeds 2^24, so the layer must run in float64
    model = random_model([5, 5], [64, 64], input_hw=(8, 8), seed=3)
    assert any(layer_bound(layer, 255) >= FLOAT32_EXACT for layer in model.conv_layers())
    images = np.full((1, 3, 8, 8), 255, np.uint8)
    np.testing.assert_array_equal(FastExecutor(model).run(images)[0], golden.run(model, images[0]))


def test_rejects_non_uint8_input(tiny_model):
    with pytest.raises(ValueError, match="uint8"):
        FastExecutor(tiny_model).run(np.zeros((1, 3, 16, 16), np.float32))
