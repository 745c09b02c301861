"""Memory estimates from sizes alone: the 4096x4096 runs are refused before any allocation."""

from __future__ import annotations

import pytest

from chipq.executor.memory import InputTooSmall, NotEnoughMemory, activation_bytes, check_fits, check_input_size
from chipq.formats.synthetic import VGG16_CONFIG, VGG16_PLAN_3X7_1X6, random_model


@pytest.fixture(scope="module")
def vgg16():
    return random_model(VGG16_PLAN_3X7_1X6, VGG16_CONFIG, seed=0)


def test_the_estimate_grows_with_the_pixels_and_the_batch(vgg16):
    base = activation_bytes(vgg16.layers, (224, 224), 1)
    # conv1_2 is the widest: (64 + 64) maps of 224x224, 4 bytes, two copies
    assert base == (64 + 64) * 224 * 224 * 4 * 2
    assert activation_bytes(vgg16.layers, (448, 448), 1) == 4 * base
    assert activation_bytes(vgg16.layers, (224, 224), 8) == 8 * base


def test_4096_square_vgg16_is_refused_and_224_fits(vgg16, monkeypatch):
    monkeypatch.setattr("chipq.executor.memory.available_bytes", lambda: 8 << 30)  # an 8 GiB machine
    check_fits(vgg16.layers, (224, 224), 8, "blob")
    with pytest.raises(NotEnoughMemory, match=r"--input 4096x4096: a 4096x4096 input needs about 16\.0 GiB"):
        check_fits(vgg16.layers, (4096, 4096), 1, "--input 4096x4096")


def test_sizes_too_small_for_the_pools_are_refused(vgg16):
    check_input_size(vgg16.layers, (16, 16), "--input 16x16")  # four pools: 16 -> 1
    with pytest.raises(InputTooSmall, match="4 max-pools need at least 16x16"):
        check_input_size(vgg16.layers, (8, 8), "--input 8x8")
