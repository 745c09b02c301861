"""VGG in torchvision's layout and the FloatStack <-> torch bridges."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from torch import nn

import chipq.importers.torchvision_layout
from chipq.floatnet.model import FloatConv, FloatPool, FloatStack
from chipq.floatnet.torchnet import stack_to_torch
from chipq.importers.torchvision_layout import VGG_CFGS, feature_layout, stack_from_state_dict, vgg_cfg
from chipq.importers.torchvision_vgg import VGG

# torchvision's vgg16 / vgg16_bn: features.N of every conv and every max-pool, as its models print.
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_POOLS = [4, 9, 16, 23, 30]
VGG16_BN_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
VGG16_BN_POOLS = [6, 13, 23, 33, 43]


def test_doctests():
    assert doctest.testmod(chipq.importers.torchvision_layout).failed == 0


@pytest.mark.parametrize(
    "batch_norm, convs, pools", [(False, VGG16_CONVS, VGG16_POOLS), (True, VGG16_BN_CONVS, VGG16_BN_POOLS)]
)
def test_vgg16_indices_are_torchvisions(batch_norm, convs, pools):
    kinds = feature_layout(VGG_CFGS["D"], batch_norm)
    assert [i for i, k in enumerate(kinds) if k == "conv"] == convs
    assert [i for i, k in enumerate(kinds) if k == "pool"] == pools
    model = VGG("D", batch_norm=batch_norm)
    assert [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)] == convs
    assert [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)] == pools
    assert {f"features.{i}.weight" for i in convs} <= set(model.state_dict())


@pytest.mark.parametrize("cfg", list(VGG_CFGS))
def test_state_dict_to_stack_keeps_every_weight_bit_for_bit(cfg):
    torch.manual_seed(0)
    model = VGG(vgg_cfg(cfg, 16))
    stack = stack_from_state_dict(model.state_dict(), source="x")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(stack.conv_layers()) == len(convs)
    for layer, conv in zip(stack.conv_layers(), convs):
        assert np.array_equal(layer.weight, conv.weight.detach().numpy())
        assert np.array_equal(layer.bias, conv.bias.detach().numpy())
    assert stack.layers[-1].name == "pool5" and stack.source == "x"


def test_stack_to_torch_runs_exactly_what_the_features_run():
    torch.manual_seed(1)
    model = VGG(vgg_cfg("D", 16)).eval()
    net = stack_to_torch(stack_from_state_dict(model.state_dict()))
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(net(x), model.features(x))
        taps = net.forward_taps(x)
        assert list(taps)[:3] == ["conv1_1", "conv1_2", "pool1"] and len(taps) == 18
        assert torch.equal(net(x, until="conv5_3"), taps["conv5_3"])
        assert taps["conv5_3"].shape == (2, 32, 2, 3) and taps["pool5"].shape == (2, 32, 1, 1)
    assert not net.training


def test_stack_to_torch_takes_any_chain():
    rng = np.random.default_rng(0)
    stack = FloatStack([
        FloatConv("a", rng.standard_normal((2, 3, 3, 3)).astype(np.float32), np.zeros(2, np.float32)),
        FloatPool("p"),
        FloatConv("b", rng.standard_normal((5, 2, 3, 3)).astype(np.float32), np.ones(5, np.float32)),
    ])  # fmt: skip
    net = stack_to_torch(stack)
    assert sorted(net.state_dict()) == [
        "layers.a.bias", "layers.a.weight", "layers.b.bias", "layers.b.weight"
    ]
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        want = torch.relu(nn.functional.conv2d(x, torch.from_numpy(stack.layers[0].weight), padding=1))
        want = nn.functional.max_pool2d(want, 2)
        w2 = torch.from_numpy(stack.layers[2].weight)
        want = torch.relu(nn.functional.conv2d(want, w2, torch.ones(5), padding=1))
        assert torch.equal(net(x), want)


def test_batch_norm_fold_matches_eval_mode():
    torch.manual_seed(2)
    model = VGG(vgg_cfg("A", 16), batch_norm=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = model.features(x)
        got = stack_to_torch(stack_from_state_dict(model.state_dict()))(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_classifier_head_shapes():
    model = VGG(vgg_cfg("A", 16), classifier=True, hidden=8, num_classes=3, pool_size=2)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert model.state_dict()["classifier.0.weight"].shape == (8, 32 * 2 * 2)
