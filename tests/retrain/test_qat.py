"""The differentiable quantizer: the forward is the chip, the backward goes straight through."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from floatcraft import random_stack

from chipq.executor.fast import FastExecutor
from chipq.floatnet.model import FloatStack
from chipq.quant.calibrate import quantize_activations
from chipq.quant.chipnet import activations
from chipq.quant.quantize import quantize_conv, quantize_stack
from chipq.retrain.qat import InputFold, QatNet, dequantized_bias, fake_quant_activations


def tiny_stack(seed: int = 0) -> FloatStack:
    """conv1_1 3->8, conv1_2 8->8, pool1, conv2_1 8->16."""
    return random_stack([8, 8, "M", 16], seed=seed)


PLAN, FRACS = [3, 2, 1], [4, 4, 4]


def whole_net(stack: FloatStack) -> QatNet:
    return QatNet(stack.layers, PLAN, FRACS, in_frac=0, fold=InputFold.of(stack))


def test_fake_quant_is_the_chip_models_ste_activations():
    """`fake_quant_activations` is `chipq.quant.chipnet.activations` with the straight-through
    backward (tests/quant/test_chipnet.py checks that against the numpy rule)."""
    x = torch.linspace(-2.0, 20.0, 101)
    assert torch.equal(fake_quant_activations(x, 4), activations(x, 4, ste=True))
    np.testing.assert_array_equal(fake_quant_activations(x, 4).numpy(), quantize_activations(x.double().numpy(), 4))


def test_fake_quant_gradient_is_one_inside_and_zero_where_the_chip_clips():
    x = torch.tensor([-1.0, 0.3, 10.0, 16.5], requires_grad=True)  # frac 4: top = 255/16 = 15.94
    fake_quant_activations(x, 4).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_torch_fold_equals_numpy_fold():
    stack = tiny_stack()
    fold = InputFold.of(stack)
    conv = stack.conv_layers()[0]
    want = fold.apply_numpy(conv)
    got_w, got_b = fold.apply(torch.from_numpy(conv.weight), torch.from_numpy(conv.bias))
    np.testing.assert_allclose(got_w.numpy(), want.weight, rtol=1e-6)
    np.testing.assert_allclose(got_b.numpy(), want.bias, rtol=1e-5, atol=1e-6)


def test_chip_layers_are_those_of_quantize_stack():
    stack = tiny_stack()
    model, _ = quantize_stack(stack, PLAN, FRACS, (16, 16))
    assert whole_net(stack).chip_layers() == model.conv_layers()


def test_forward_is_the_integer_chip():
    """The QAT forward, scaled back to integers, equals the fast executor on the packed model."""
    stack = tiny_stack()
    model, _ = quantize_stack(stack, PLAN, FRACS, (16, 16))
    pixels = np.random.default_rng(5).integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    chip = FastExecutor(model).run(pixels)
    x0 = torch.from_numpy(pixels).float() - torch.tensor(model.input_mean, dtype=torch.float32).reshape(1, 3, 1, 1)
    with torch.no_grad():
        out = whole_net(stack)(x0).numpy() * 2.0 ** model.activation_fracs()[-1]
    np.testing.assert_array_equal(out, chip.astype(np.float32))
    assert 0 < chip.mean() < 255  # not a trivially empty or saturated map


def test_gradient_reaches_every_shadow_weight():
    stack = tiny_stack()
    net = whole_net(stack)
    x0 = torch.from_numpy(np.random.default_rng(1).uniform(-120, 130, (2, 3, 16, 16)).astype(np.float32))
    net(x0).square().sum().backward()
    for name in ("conv1_1", "conv1_2", "conv2_1"):
        assert net.weights[name].grad is not None and net.weights[name].grad.abs().sum() > 0
        assert net.biases[name].grad.abs().sum() > 0


def test_suffix_starts_from_a_prefix_output():
    """A net over conv2_1 only takes pool1's real-valued output and has no input fold."""
    stack = tiny_stack()
    net = QatNet(stack.layers[3:], [1], [4], in_frac=4)
    layer = net.chip_layers()[0]
    want = quantize_conv(stack.conv_layers()[2], 1, 4, 4)
    assert layer == want
    np.testing.assert_array_equal(
        dequantized_bias(layer, 4), want.bias * 2.0 ** (want.bias_shift - want.weight_shift - 4)
    )


def test_mismatched_plan_is_refused():
    with pytest.raises(ValueError, match="2 bits"):
        QatNet(tiny_stack().layers, [3, 2], FRACS, in_frac=0)

