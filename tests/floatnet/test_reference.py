"""The float reference: torchvision normalisation, last conv map or every layer, any batch split."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from helpers import tiny_vgg

import chipq.floatnet.reference
from chipq.floatnet.model import IMAGENET_MEAN, IMAGENET_STD
from chipq.floatnet.reference import FloatReference, ImageBatchError, normalise
from chipq.importers.torchvision_layout import stack_from_state_dict


@pytest.fixture(scope="module")
def tiny():
    model = tiny_vgg("D")
    return model, stack_from_state_dict(model.state_dict())


def images(n=3, h=40, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, h, w), dtype=np.uint8)


def test_doctests():
    assert doctest.testmod(chipq.floatnet.reference).failed == 0


def test_normalisation_is_torchvisions():
    x = images(1, 2, 2)
    got = normalise(x, IMAGENET_MEAN, IMAGENET_STD)
    for c in range(3):
        want = (x[0, c].astype(np.float64) / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(got[0, c], want, rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32


def test_run_gives_the_last_conv_map_of_the_model(tiny):
    model, stack = tiny
    x = images()
    got = FloatReference(stack).run(x)
    with torch.no_grad():
        # features[:30] ends with conv5_3's ReLU, before pool5
        want = model.features[:30](torch.from_numpy(normalise(x, IMAGENET_MEAN, IMAGENET_STD))).numpy()
    assert got.dtype == np.float32 and got.shape == (3, 32, 2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_taps_give_every_layer_in_order(tiny):
    _, stack = tiny
    ref = FloatReference(stack)
    x = images(2)
    taps = ref.run(x, taps=True)
    assert list(taps) == [layer.name for layer in stack.layers]
    assert taps["conv1_1"].shape == (2, 4, 40, 48) and taps["pool5"].shape == (2, 32, 1, 1)
    assert np.array_equal(taps["conv5_3"], ref.run(x))
    assert all(v.min() >= 0 for v in taps.values())  # ReLU outputs and their max-pools


def test_batch_split_does_not_change_the_result(tiny):
    _, stack = tiny
    x = images(5)
    np.testing.assert_allclose(FloatReference(stack, batch=2).run(x), FloatReference(stack, batch=8).run(x),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((1, 3, 8, 8), np.float32), "expected a uint8"),
        (np.zeros((3, 8, 8), np.uint8), "expected a uint8"),
        (np.zeros((1, 8, 8, 3), np.uint8), "8 channels, expected 3"),
        (np.zeros((0, 3, 8, 8), np.uint8), "empty batch"),
        ([[1, 2, 3]], "got a list"),
    ],
)
def test_bad_batches_are_refused(tiny, bad, message):
    with pytest.raises(ImageBatchError, match=message):
        FloatReference(tiny[1]).run(bad)


def test_layer_outputs_are_the_taps_one_layer_at_a_time(tiny):
    _, stack = tiny
    ref = FloatReference(stack)
    x = images(2)
    taps = ref.run(x, taps=True)
    streamed = list(ref.layer_outputs(x))
    assert [name for name, _ in streamed] == list(taps)
    for name, out in streamed:
        assert np.array_equal(out, taps[name]), name


def test_layer_outputs_check_the_batch(tiny):
    _, stack = tiny
    with pytest.raises(ImageBatchError):
        next(FloatReference(stack).layer_outputs(images().astype(np.float32)))
