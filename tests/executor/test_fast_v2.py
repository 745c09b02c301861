"""Chip format v2 models (narrow alpha, kernel presence) through every executor: fast == golden.

An absent kernel has alpha 0 and mask 0, so W = 0 for it and golden needs no change; these tests pin
that the fast executor's routes (float, int8 at both weight ranges, the skipping of absent kernels)
give the golden bytes on v2 models too, including layers with no kernel at all and 1-bit alphas.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fast import routes

from chipq.executor import golden
from chipq.executor.pruned import split_dead_outputs
from chipq.formats.model import ChipModel
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes


def images_for(model: ChipModel, count: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 3, model.input_height, model.input_width), dtype=np.uint8)
    images[0, :, : model.input_height // 2] = 255  # saturating half: accumulators near their bounds
    return images


def assert_every_route_equals_golden(model: ChipModel, images: np.ndarray) -> None:
    golden_taps = [golden.run(model, image, taps=True) for image in images]
    for name, executor in routes(model).items():
        fast_taps = executor.run(images, taps=True)
        for index in range(len(images)):
            for layer, fast, gold in zip(model.layers, fast_taps, golden_taps[index]):
                np.testing.assert_array_equal(fast[index], gold, err_msg=f"{name} {layer.name}")


def test_per_layer_alpha_width_and_keep():
    """alpha widths 5, 1, 8, 3 and keep shares 0.5, 0 (no kernel at all), 1, 0.3, one per conv."""
    model = random_model(
        [3, 2, 1, 5], [8, 16, "M", 12, 10], input_hw=(12, 10), seed=4,
        alpha_bits=[5, 1, 8, 3], keep=[0.5, 0.0, 1.0, 0.3],
    )  # fmt: skip
    assert model.format_version() == 2
    assert model.conv_layers()[1].kept_kernels() == 0
    assert_every_route_equals_golden(model, images_for(model))


def test_v2_model_read_back_from_its_blob():
    """The reader's decoded arrays (scattered kernels, shifted alpha codes) run exactly as written."""
    model = random_model([2, 4, 1], [6, "M", 9, 7], input_hw=(10, 8), seed=7, alpha_bits=5, keep=0.5)
    decoded = from_bytes(to_bytes(model))
    assert decoded == model
    assert_every_route_equals_golden(decoded, images_for(decoded, seed=1))


def test_whole_input_channels_absent():
    """Input channels that no kernel of a layer uses (and an output channel with no kernel)."""
    model = random_model([3, 3], [8, 8], input_hw=(9, 9), seed=2, alpha_bits=4, keep=0.7)
    conv = model.conv_layers()[1]
    present = conv.present.copy()
    present[:, [0, 3, 4]] = False  # inputs 0, 3, 4 unused
    present[5] = False  # output 5 keeps only its bias
    layer = replace(
        conv,
        present=present,
        alpha=np.where(present, conv.alpha, 0).astype(np.uint8),
        mask=np.where(present[:, :, None, None], conv.mask, 0).astype(np.uint8),
    )
    model = replace(model, layers=(model.layers[0], layer))
    from_bytes(to_bytes(model))  # still a valid blob
    assert_every_route_equals_golden(model, images_for(model, count=3))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    bits=st.lists(st.integers(1, 5), min_size=3, max_size=3),
    alpha_bits=st.lists(st.integers(1, 8), min_size=3, max_size=3),
    keep=st.lists(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.9, 1.0]), min_size=3, max_size=3),
)
def test_random_v2_models(seed, bits, alpha_bits, keep):
    """For any per-layer alpha width (1..8) and keep share, every layer's output equals golden."""
    model = random_model(bits, [7, "M", 11, 6], input_hw=(8, 6), seed=seed, alpha_bits=alpha_bits, keep=keep)
    assert_every_route_equals_golden(model, images_for(model, seed=seed))


def test_all_kernels_absent_gives_the_bias_only():
    """A model whose convs keep no kernel: every output is requantised bias, on every route."""
    model = random_model([1, 2], [4, 5], input_hw=(6, 6), seed=9, alpha_bits=1, keep=0.0)
    assert_every_route_equals_golden(model, images_for(model))


# --- output channels that keep no kernel (chipq.executor.pruned) ----------------------------------


def with_dead_outputs(model: ChipModel, index: int, dead: list[int]) -> ChipModel:
    """`model` with conv layer `index` (in model.layers) keeping no kernel in the `dead` outputs."""
    conv = model.layers[index]
    present = np.ones(conv.alpha.shape, bool) if conv.present is None else conv.present.copy()
    present[dead] = False
    layer = replace(
        conv,
        present=present,
        alpha=np.where(present, conv.alpha, 0).astype(np.uint8),
        mask=np.where(present[:, :, None, None], conv.mask, 0).astype(np.uint8),
    )
    layers = list(model.layers)
    layers[index] = layer
    return replace(model, layers=tuple(layers))


def inner_steps(executor) -> list:
    """(wrapper class, inner step class) of every conv step of an executor."""
    out = []
    for step, _ in executor.steps:
        if step is not None:
            inner = getattr(step, "step", step)
            out.append((type(step).__name__, type(inner).__name__))
    return out


def test_split_dead_outputs_and_their_constants():
    model = random_model([2, 3], [4, 8], input_hw=(6, 6), seed=1, alpha_bits=6, keep=1.0)
    model = with_dead_outputs(model, 1, [0, 5, 6])
    layer = model.layers[1]
    assert split_dead_outputs(layer, min_share=0.5) is None  # 3 of 8 is below a half
    split = split_dead_outputs(layer)  # and above MIN_DEAD_SHARE
    assert split.dead.tolist() == [0, 5, 6] and split.live.tolist() == [1, 2, 3, 4, 7]
    assert split.live_layer.out_channels == 5 and split.live_layer.present is None
    # a dead output is its requantised bias at every pixel, as golden computes it
    out = golden.run(model, np.zeros((3, 6, 6), np.uint8), taps=True)[1]
    for value, channel in zip(split.constants, split.dead):
        assert (out[channel] == value).all()
    assert split_dead_outputs(model.layers[0]) is None  # no presence bitmap


@pytest.mark.parametrize("first", ["FirstLayerFloat", "Int8Conv"])
def test_dead_outputs_are_skipped_and_exact(first):
    """Dead outputs in the first layer and in a later one, with biases that requantise to 0, to 255
    and between: skipped on every route, every layer equal to golden. conv1_1 runs on the int8
    route's float first layer, or (alphas of 200 make float32 inexact there) on int8 convolutions
    of mean-padded pixels."""
    first_bits = 1 if first == "FirstLayerFloat" else 5
    model = random_model([first_bits, 3, 2], [8, "M", 8, 6], input_hw=(10, 12), seed=21, alpha_bits=[8, 4, 8],
                         keep=[1.0, 0.8, None], input_mean=(0, 0, 0))  # fmt: skip
    if first == "Int8Conv":
        conv1 = model.layers[0]
        model = replace(model, layers=(replace(conv1, alpha=np.full_like(conv1.alpha, 200)), *model.layers[1:]))
    model = with_dead_outputs(with_dead_outputs(model, 0, [1, 2, 6]), 2, [0, 3, 4, 7])
    conv = model.layers[2]
    bias = conv.bias.copy()
    bias[[0, 3, 4]] = [-2048, 2047, 300]  # a dead output at 0, one saturated, one in between
    model = replace(model, layers=(model.layers[0], model.layers[1], replace(conv, bias=bias), model.layers[3]))
    from_bytes(to_bytes(model))  # valid
    for name, executor in routes(model).items():
        kinds = inner_steps(executor)
        assert kinds[0][0] == kinds[1][0] == "SkipDeadOutputs", (name, kinds)
        assert name == "float" or kinds[0][1] == first
        assert kinds[2][0] != "SkipDeadOutputs"  # no presence bitmap
    assert_every_route_equals_golden(model, images_for(model, count=3))
