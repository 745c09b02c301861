"""`QatNet` fits each layer once a step (`_fit`, kept until the weights or kept kernels change):
its forward layers equal a fresh `quantize_conv` of the current shadow weights after every kind of
change a training run makes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_trainer import photos, tiny_stack

from chipq.quant.compress import calibrate
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import quantize_conv
from chipq.retrain.config import RetrainConfig
from chipq.retrain.trainer import Retrainer

PLAN = [LayerSpec(3), LayerSpec(2, 6, 75), LayerSpec(2, 4, 60)]


@pytest.fixture()
def net():
    stack = tiny_stack()
    calib = np.stack([img[:32, :32].transpose(2, 0, 1) for img in photos(3, seed=9)])
    config = RetrainConfig(steps=4, batch=4, crop=32, samples=8, train_from="conv1_1", prune_from=20)
    return Retrainer(stack, PLAN, calibrate(stack, calib), config, (32, 32)).net


def _fresh_equals_forward(net) -> None:
    """Each conv's forward layer (the kept fit) against `quantize_conv` with no fit given."""
    frac = net.in_frac
    for index, (name, kind) in enumerate(net.kinds):
        if kind == "pool":
            continue
        chip = net._quantized(name, frac, index == 0)
        fresh = quantize_conv(net._float_conv(name), net.bits[name], frac, net.out_fracs[name], net.kept(name))
        assert torch.equal(chip.weight, torch.from_numpy(fresh.int_weights().astype(np.float32)) * 2.0**-fresh.weight_shift)
        frac = chip.frac


def test_the_kept_fit_follows_steps_pruning_and_capping(net):
    _fresh_equals_forward(net)
    rng = np.random.default_rng(0)
    with torch.no_grad():  # an optimizer step: every weight moves in place
        for weight in net.weights.values():
            weight.add_(torch.from_numpy(rng.standard_normal(weight.shape).astype(np.float32)) * 1e-3)
    _fresh_equals_forward(net)
    net.prune_to("conv2_1", net.target("conv2_1"))  # trained pruning removes kernels
    _fresh_equals_forward(net)
    with torch.no_grad():
        net.weights["conv2_2"][1, 0] *= 40.0  # one kernel far past the held alpha: capped
    assert net.cap_alphas() >= 1
    _fresh_equals_forward(net)
