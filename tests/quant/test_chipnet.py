"""The torch model of the chip (`chipq.quant.chipnet`) is the golden executor in real units.

`test_torch_chip_is_golden_on_every_layer` pins it: a synthetic chip model run through `ChipNet`
from uint8 pixels gives, each layer's output divided by its step ``2^-f``, exactly the golden
executor's uint8 map, every element of every layer.

When float32 could differ from golden, and how these tests avoid it: the torch forward is float32,
exact as long as every partial sum of a convolution is an exact float32, i.e. every accumulator in
units of ``2^-(f_in + s)`` stays below 2^24 (whatever order the convolution sums in), and
``out_shift <= 16`` (so ``acc·2^-out_shift + 0.5`` is exact below 256). The models here are small
(few channels, masks of at most 3 bits) and the test first asserts that SPEC 4.5's worst-case
accumulator bound of every layer is below 2^24, so equality is a theorem for them, not luck.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chipq.executor import golden
from chipq.executor.golden import GoldenExecutor
from chipq.formats.bounds import accumulator_bound
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.synthetic import random_model
from chipq.quant.calibrate import quantize_activations
from chipq.quant.chipnet import ChipConv, ChipNet, activations, conv3x3

FLOAT32_EXACT = 1 << 24  # integers up to this are exact float32 values


def small_model(seed: int) -> ChipModel:
    """conv1_1 3->6, pool1, conv2_1 6->8, conv2_2 8->8, pool2, conv3_1 8->4, on an odd-sized input
    (the pools drop a row and a column), each out_shift set so that the layer's output on
    `pixels` spreads over the uint8 range (a few values saturate, most are rounded)."""
    model = random_model([3, 2, 1, 3], [6, "M", 8, 8, "M", 4], input_hw=(21, 19), seed=seed)
    images = pixels(model, 3, seed)
    xs = [golden.subtract_mean(image, model.input_mean) for image in images]
    layers = []
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            accs = [golden.conv3x3_accumulate(x, layer) for x in xs]
            high = np.percentile(np.concatenate([a.ravel() for a in accs]), 95)
            layer = replace(layer, out_shift=int(np.clip(np.floor(np.log2(max(high, 1) / 128)), 0, 16)))
            xs = [golden.requantize(a, layer.out_shift) for a in accs]
        else:
            xs = [golden.maxpool2x2(x) for x in xs]
        layers.append(layer)
    return replace(model, layers=tuple(layers))


def pixels(model: ChipModel, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 3, model.input_height, model.input_width), dtype=np.uint8)


def in_steps(model: ChipModel, taps: list[torch.Tensor]) -> list[np.ndarray]:
    """Each layer's real-valued output divided by its step 2^-f (float64: exact)."""
    return [t.numpy().astype(np.float64) * 2.0**f for t, f in zip(taps, model.activation_fracs())]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_chip_is_golden_on_every_layer(seed):
    model = small_model(seed)
    # the precondition of float32 exactness (module docstring)
    assert max(accumulator_bound(model)) < FLOAT32_EXACT
    assert all(layer.out_shift <= 16 for layer in model.conv_layers())
    images = pixels(model, 3, seed)
    want = GoldenExecutor(model).run(images, taps=True)
    net = ChipNet.of_model(model)
    with torch.no_grad():
        got = in_steps(model, net.run(net.input(images), taps=True))
    assert len(got) == len(want) == len(model.layers)
    for layer, g, w in zip(model.layers, got, want):
        np.testing.assert_array_equal(g, w.astype(np.float64), err_msg=layer.name)
    convs = [w for layer, w in zip(model.layers, want) if isinstance(layer, ConvLayer)]
    assert all(10 < w.mean() < 200 and (w == 0).any() for w in convs)  # neither empty nor saturated maps
    assert any((w == 255).any() for w in convs)  # but the saturation is exercised


def test_chunks_start_and_swap():
    """Chunked convolutions, a run from a middle layer and one swapped layer give the same maps."""
    model = small_model(3)
    images = pixels(model, 5, 7)
    whole = ChipNet.of_model(model)
    with torch.no_grad():
        taps = whole.run(whole.input(images), taps=True)
        chunked = ChipNet.of_model(model, chunk=2)
        assert torch.equal(chunked.run(chunked.input(images)), taps[-1])
        # from pool1's output on: the tail of the taps
        tail = whole.run(taps[1], 2, taps=True)
        assert all(torch.equal(a, b) for a, b in zip(tail, taps[2:]))
        # conv2_1 swapped for itself: nothing changes; for a zero layer: zero maps after it
        conv = whole.layers[2]
        assert torch.equal(whole.run(taps[1], 2, swap={2: conv}), taps[-1])
        dead = ChipConv(conv.name, torch.zeros_like(conv.weight), torch.zeros_like(conv.bias), conv.frac)
        assert torch.equal(whole.run(taps[1], 2, 3, swap={2: dead}), torch.zeros_like(taps[2]))
    assert whole.conv_positions() == [0, 2, 3, 5]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-100, 400, allow_nan=False, width=32), min_size=1, max_size=20),
    st.integers(-3, 8),
    st.booleans(),
)
def test_activations_are_the_numpy_rule(values, frac, ste):
    """Property: `activations` (either backward) is `quantize_activations`, ReLU included."""
    x = np.array(values, dtype=np.float32)
    got = activations(torch.from_numpy(x), frac, ste=ste).numpy()
    np.testing.assert_array_equal(got, quantize_activations(x.astype(np.float64), frac).astype(np.float32))


def test_ste_gradient_is_one_inside_and_zero_where_the_chip_clips():
    x = torch.tensor([-1.0, 0.3, 10.0, 15.9, 16.5], requires_grad=True)  # frac 4: top = 255/16 = 15.94
    activations(x, 4, ste=True).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    y = torch.tensor([0.3, 10.0], requires_grad=True)
    activations(y, 4).sum().backward()  # without STE the rounding passes no gradient
    assert y.grad.tolist() == [0.0, 0.0]


def test_ste_layer_gradient_is_that_of_the_clamped_conv():
    """Through a whole layer the STE gradient is exactly that of ``clamp(conv(x), 0, 255·2^-f)``."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0, 4, (2, 4, 9, 9)).astype(np.float32))
    weight = torch.from_numpy(rng.normal(0, 0.3, (5, 4, 3, 3)).astype(np.float32)).requires_grad_()
    bias = torch.from_numpy(rng.normal(0, 0.5, 5).astype(np.float32)).requires_grad_()
    frac = 5  # top = 255/32 ≈ 8: some outputs saturate, some are cut by the ReLU
    out = ChipConv("conv", weight, bias, frac).forward(x, ste=True)
    out.square().sum().backward()
    ste_grads = weight.grad.clone(), bias.grad.clone()
    weight.grad = bias.grad = None
    clamped = torch.clamp(conv3x3(x, weight, bias), 0.0, 255 * 2.0**-frac)
    # the same upstream gradient (2·out) through the clamp alone
    (clamped * (2 * out.detach())).sum().backward()
    assert torch.equal(ste_grads[0], weight.grad) and torch.equal(ste_grads[1], bias.grad)
    assert (out == 255 * 2.0**-frac).any() and (out == 0).any()
