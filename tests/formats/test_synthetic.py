"""Random models: valid for the writer, deterministic per seed, shaped as asked."""

from __future__ import annotations

import time

import numpy as np
import pytest

from chipq.formats import constants as C
from chipq.formats.model import ConvLayer, PoolLayer
from chipq.formats.synthetic import VGG16_CONFIG, VGG16_PLAN_3X7_1X6, random_model
from chipq.formats.writer import accumulator_bound, to_bytes


def test_tiny_model_shape_and_names():
    start = time.perf_counter()
    model = random_model([3, 1, 2], [4, "M", 8, 8, "M"], input_hw=(12, 10), seed=5)
    assert time.perf_counter() - start < 0.5  # executor tests build many of these
    names = [layer.name for layer in model.layers]
    assert names == ["conv1_1", "pool1", "conv2_1", "conv2_2"]  # the trailing pool is dropped
    conv1, pool, conv2, conv3 = model.layers
    assert isinstance(pool, PoolLayer) and pool.channels == 4
    assert (conv1.in_channels, conv1.out_channels, conv1.mask_bits) == (3, 4, 3)
    assert (conv2.in_channels, conv2.out_channels, conv2.mask_bits, conv3.mask_bits) == (4, 8, 1, 2)
    assert (model.input_height, model.input_width) == (12, 10)
    assert conv1.alpha.dtype == np.uint8 and conv1.mask.dtype == np.uint8 and conv1.bias.dtype == np.int16
    assert int(conv3.mask.max()) < 4
    to_bytes(model)  # valid, SPEC 4.5 included


def test_same_seed_same_model():
    assert random_model([1], [8], (8, 8), seed=3) == random_model([1], [8], (8, 8), seed=3)
    assert random_model([1], [8], (8, 8), seed=3) != random_model([1], [8], (8, 8), seed=4)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5])
def test_bound_holds_for_the_widest_layers(bits):
    """4096 input channels at every mask width still fit the 32-bit accumulator."""
    model = random_model([bits, bits], [4096, 8], input_hw=(4, 4), seed=bits)
    assert max(accumulator_bound(model)) <= C.ACC_MAX


def test_vgg16_shape():
    model = random_model(VGG16_PLAN_3X7_1X6, VGG16_CONFIG)
    convs = model.conv_layers()
    assert [c.mask_bits for c in convs] == [3] * 7 + [1] * 6
    assert [c.name for c in convs][-1] == "conv5_3" and isinstance(model.layers[-1], ConvLayer)
    assert sum(c.alpha.size for c in convs) == 14_710_464 // 9
    assert all(1 <= int(c.alpha.min()) and int(c.alpha.max()) <= 255 for c in convs)


def test_plan_must_match_the_convs():
    with pytest.raises(ValueError, match="2 entries for 3 convs"):
        random_model([1, 1], [4, 4, "M", 4])
