"""Retraining holds the trained layers' weight shifts on v2 plans (`RetrainConfig.hold_shift`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_trainer import photos, tiny_stack

from chipq.executor.fast import FastExecutor
from chipq.quant import quantize
from chipq.quant.compress import calibrate
from chipq.quant.plan import LayerSpec
from chipq.retrain.config import RetrainConfig, RetrainConfigError
from chipq.retrain.trainer import Retrainer, torch_settings, training_sample

# narrow alpha on the trained layers; lr high enough that an unheld conv2_2 loses a shift step
PLAN = [LayerSpec(3), LayerSpec(2, 6), LayerSpec(1, 4)]
CONFIG = RetrainConfig(steps=12, batch=4, crop=32, samples=8, lr=3e-2, seed=3)


@pytest.fixture(scope="module")
def calib():
    return np.stack([img[:32, :32].transpose(2, 0, 1) for img in photos(3, seed=9)])


def _trained(calib, config: RetrainConfig) -> tuple[Retrainer, list[int], int]:
    """A trained retrainer, the weight shifts of its start and the kernels capped on the way."""
    stack = tiny_stack()
    trainer = Retrainer(stack, PLAN, calibrate(stack, calib), config, (32, 32))
    start = [layer.weight_shift for layer in trainer.chip_model()[0].conv_layers()]
    with torch_settings(config.threads):
        trainer.build_cache(photos())
        capped = sum(trainer.train_step().capped for _ in range(config.steps))
    return trainer, start, capped


@pytest.mark.parametrize("rule", ["max", "clip"])
@pytest.mark.parametrize("train_from", ["", "conv1_1"])  # conv1_1: the shift of the folded weights
def test_held_shifts_stay_and_the_blob_is_what_training_ran(calib, monkeypatch, train_from, rule):
    monkeypatch.setattr(quantize, "SHIFT_RULE", rule)
    config = RetrainConfig(**{**CONFIG.__dict__, "train_from": train_from})
    if rule == "max":  # the rule under which one kernel growing past the top halves the grid
        unheld, start, capped = _trained(calib, RetrainConfig(**{**config.__dict__, "hold_shift": "off"}))
        assert [layer.weight_shift for layer in unheld.chip_model()[0].conv_layers()][2] < start[2] and capped == 0
    held, start, capped = _trained(calib, config)  # "auto": on for a v2 plan
    assert capped > 0
    model, _ = held.chip_model()
    trained = model.conv_layers()[held.first :]
    assert [layer.weight_shift for layer in trained] == start[held.first :]
    # the written model is exactly the forward training ran (QAT output == the integer executor)
    with torch.no_grad(), torch_settings(config.threads):
        qat = held.net(held.batch(torch.arange(8))[0]).numpy()
    pixels = np.stack([training_sample(photos(), config, i) for i in range(8)])
    chip = FastExecutor(model).run(pixels).astype(np.float32) * 2.0 ** -model.activation_fracs()[-1]
    assert np.array_equal(qat, chip)


def test_capping_scales_whole_kernels_and_keeps_their_masks(calib):
    stack = tiny_stack()
    trainer = Retrainer(stack, PLAN, calibrate(stack, calib), CONFIG, (32, 32))
    net = trainer.net
    assert set(net.alpha_cap) == {"conv2_2"} and net.cap_alphas() == 0  # the start is within
    before = trainer.chip_model()[0].conv_layers()[2]
    with torch.no_grad():
        net.weights["conv2_2"][0, 0] *= 50.0  # one kernel far past the layer's largest alpha
    assert net.cap_alphas() == 1
    after = trainer.chip_model()[0].conv_layers()[2]
    assert after.weight_shift == before.weight_shift
    assert np.array_equal(after.mask[0, 0], before.mask[0, 0])


def test_v1_plans_hold_nothing_and_bad_values_are_refused(calib):
    stack = tiny_stack()
    trainer = Retrainer(stack, [3, 1, 1], calibrate(stack, calib), CONFIG, (32, 32))
    assert trainer.net.alpha_cap == {}  # the v1 default blob keeps its bytes
    assert RetrainConfig(hold_shift="on").holds_shift([LayerSpec(1)])
    with pytest.raises(RetrainConfigError, match="hold_shift"):
        RetrainConfig(hold_shift="maybe").check()
