"""The fast executor equals the golden one on every element (the only test that matters)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chipq.executor import golden, int8
from chipq.executor.fast import FastExecutor, InexactFloat, channel_groups
from chipq.formats import constants as C
from chipq.formats.constants import FLOAT32_EXACT
from chipq.formats.model import ChipModel, ConvLayer
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


def routes(model, batch=2):
    """The executors under test: the float route, and the int8 route with this CPU's weight range
    and with the narrower one CPUs without VNNI get (when the int8 route runs here at all)."""
    executors = {"float": FastExecutor(model, batch=batch, route="float")}
    cap = int8.probe()
    for width in sorted({cap, 63} - {None}) if cap is not None else []:
        executors[f"int8/{width}"] = FastExecutor.with_cap(model, width, batch=batch)
    return executors


@settings(max_examples=60, deadline=None)
@given(models_and_images())
def test_fast_equals_golden_on_every_layer(case):
    """For any valid model and any uint8 images, every layer's output is equal element for element,
    on every route."""
    model, images = case
    golden_taps = [golden.run(model, image, taps=True) for image in images]
    for name, executor in routes(model).items():
        fast_taps = executor.run(images, taps=True)
        for index in range(len(images)):
            for fast, gold in zip(fast_taps, golden_taps[index]):
                assert fast.dtype == np.uint8, name
                np.testing.assert_array_equal(fast[index], gold, err_msg=name)


def test_auto_route_is_int8_where_the_probe_passes(tiny_model):
    expected = "int8" if int8.probe() is not None else "float"
    assert FastExecutor(tiny_model).route == expected


def test_unknown_route_is_refused(tiny_model):
    with pytest.raises(ValueError, match="route"):
        FastExecutor(tiny_model, route="gpu")


def test_channel_groups_keep_every_partial_sum_below_2_to_24():
    model = random_model([5, 5], [64, 64], input_hw=(8, 8), seed=3)
    layer = model.conv_layers()[1]
    groups = channel_groups(layer, 255)
    assert len(groups) > 1  # this layer needs the split
    column = np.abs(layer.int_weights().astype(np.int64)).sum(axis=(2, 3)) * 255
    assert [a for a, _ in groups] == [0] + [b for _, b in groups[:-1]]  # contiguous cover
    assert groups[-1][1] == layer.in_channels
    for a, b in groups:
        assert column[:, a:b].sum(axis=1).max() < FLOAT32_EXACT
    images = np.full((1, 3, 8, 8), 255, np.uint8)
    np.testing.assert_array_equal(FastExecutor(model, route="float").run(images)[0], golden.run(model, images[0]))


def test_float64_fallback_when_one_channel_exceeds_float32():
    # alpha 255 with 5-bit masks at +-31: one channel's 9 taps reach 9 * 7905 * 255 > 2^24
    alpha = np.zeros((2, 3), np.uint8)
    alpha[:, 0] = 255  # only plane 0 counts; the others have alpha 0
    codes = np.full((2, 3, 3, 3), 31, np.uint8)
    codes[1] = 0  # output 1: M = -31 everywhere
    layer = ConvLayer("conv1_1", 5, 0, 0, 12, alpha, codes, np.zeros(2, np.int16))
    model = ChipModel(4, 4, C.ChannelOrder.RGB, (0, 0, 0), (layer,))
    with pytest.raises(ValueError, match="alone exceeds"):
        channel_groups(layer, 255)
    executor = FastExecutor(model, route="float")
    assert executor.steps[0][0].dtype == torch.float64
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    images[0] = 255
    out = executor.run(images)
    for index in range(2):
        np.testing.assert_array_equal(out[index], golden.run(model, images[index]))


def test_rejects_non_uint8_input(tiny_model):
    with pytest.raises(ValueError, match="uint8"):
        FastExecutor(tiny_model).run(np.zeros((1, 3, 16, 16), np.float32))


def test_refuses_to_run_when_float32_may_round(tiny_model):
    images = np.zeros((1, 3, 16, 16), np.uint8)
    executors = [FastExecutor(tiny_model, route=route) for route in ("float", "auto")]
    conv = torch.backends.mkldnn.conv
    before = conv.fp32_precision
    conv.fp32_precision = "bf16"
    try:
        for executor in executors:
            with pytest.raises(InexactFloat, match="mkldnn.conv.fp32_precision"):
                executor.run(images)
    finally:
        conv.fp32_precision = before
    assert executors[0].run(images).dtype == np.uint8


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_exact_with_onednn_disabled_and_large_batches():
    """PyTorch then sends float32 convolutions of 16+ images to NNPACK (Winograd: inexact); the
    executor turns NNPACK off while it runs."""
    model = random_model([3, 3], [16, 16], input_hw=(24, 24), seed=0)
    images = np.random.default_rng(0).integers(0, 256, (16, 3, 24, 24), dtype=np.uint8)
    with torch.backends.mkldnn.flags(enabled=False):
        executors = list(routes(model, batch=16).values())
        outputs = [executor.run(images, taps=True) for executor in executors]
    for index in range(len(images)):
        for layer, want in enumerate(golden.run(model, images[index], taps=True)):
            for taps in outputs:
                np.testing.assert_array_equal(taps[layer][index], want)


def test_float_route_takes_strided_and_tiny_images():
    model = random_model([3, 1], [4, "M", 8], input_hw=(3, 5), seed=2)
    images = np.random.default_rng(1).integers(0, 256, (2, 3, 3, 5), dtype=np.uint8)[:, :, ::-1]
    for executor in routes(model).values():
        out = executor.run(images)
        for index in range(2):
            np.testing.assert_array_equal(out[index], golden.run(model, np.ascontiguousarray(images[index])))
