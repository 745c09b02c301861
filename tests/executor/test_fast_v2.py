"""Chip format v2 models (narrow alpha, kernel presence) through every executor: fast == golden.

An absent kernel has alpha 0 and mask 0, so W = 0 for it and golden needs no change; these tests pin
that the fast executor's routes (float, int8 at both weight ranges, the skipping of absent kernels)
give the golden bytes on v2 models too, including layers with no kernel at all and 1-bit alphas.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fast import routes

from chipq.executor import golden
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
