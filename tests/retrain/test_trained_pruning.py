"""Trained pruning and narrow α in retraining (chip format v2 plans)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_trainer import photos, tiny_stack

from chipq.formats import constants as C
from chipq.formats.reader import from_bytes
from chipq.formats.writer import to_bytes as blob_bytes
from chipq.quant.compress import calibrate
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import quantize_stack
from chipq.retrain.config import RetrainConfig
from chipq.retrain.pipeline import compress_retrained
from chipq.retrain.trainer import Interrupted, Retrainer, RetrainHooks, load_checkpoint, run_training, torch_settings

PLAN = [LayerSpec(3), LayerSpec(2, 5, 50), LayerSpec(1, 4, 30)]
CONFIG = RetrainConfig(steps=6, batch=4, crop=32, samples=8, lr=1e-3, seed=3, prune_from=40, prune_share=0.5)


@pytest.fixture(scope="module")
def calib():
    return np.stack([img[:32, :32].transpose(2, 0, 1) for img in photos(3, seed=9)])


def _trainer(calib, config=CONFIG):
    stack = tiny_stack()
    trainer = Retrainer(stack, PLAN, calibrate(stack, calib), config, (32, 32))
    trainer.build_cache(photos())
    return trainer


def test_kernels_are_removed_on_the_schedule_and_never_come_back(calib):
    trainer = _trainer(calib)
    assert trainer.first == 1  # the first pruned layer is trained
    assert trainer.start_kept == {"conv2_1": 29, "conv2_2": 45}  # 90 % of 32, 70 % of 64: the start plan
    masks = [{name: trainer.net.kept(name) for name in trainer.start_kept}]
    with torch_settings(CONFIG.threads):
        for _ in range(CONFIG.steps):
            trainer.train_step()
            masks.append({name: trainer.net.kept(name) for name in trainer.start_kept})
    for before, after in zip(masks, masks[1:]):
        for name in before:
            assert not np.any(after[name] & ~before[name])  # nothing revived
    counts = [int(m["conv2_2"].sum()) for m in masks]
    assert counts == [45, 45, 27, 20, 19, 19, 19]  # cubic over the first 3 steps down to 30 % of 64
    weight = trainer.net.float_layers()[-1].weight
    assert np.all(weight[~masks[-1]["conv2_2"]] == 0)


def test_the_removed_kernels_get_no_gradient(calib):
    trainer = _trainer(calib, RetrainConfig(**{**CONFIG.__dict__, "prune_from": 0}))
    with torch_settings(CONFIG.threads):
        trainer.train_step()
    gone = ~trainer.net.kept("conv2_2")
    grad = trainer.net.weights["conv2_2"].grad
    assert gone.any() and torch.all(grad[torch.from_numpy(gone)] == 0)


def test_retrained_v2_blob_has_the_plan_exactly_and_is_the_quantization_of_the_shadow(calib):
    with torch_settings(CONFIG.threads):
        result = compress_retrained(tiny_stack(), PLAN, calib, photos(), CONFIG, input_hw=(32, 32))
    model = result.model
    assert model.format_version() == C.FORMAT_V2
    for layer, spec in zip(model.conv_layers(), PLAN):
        o, i = layer.alpha.shape
        assert layer.alpha_bits == spec.alpha_bits and np.all(layer.alpha % C.alpha_step(spec.alpha_bits) == 0)
        assert (layer.kept_kernels() if layer.pruned else o * i) == spec.kept(o * i)
    assert from_bytes(blob_bytes(model)) == model


def test_a_resumed_pruning_run_ends_with_the_same_bytes(calib, tmp_path):
    full = _trainer(calib)
    with torch_settings(CONFIG.threads):
        run_training(full, None, RetrainHooks())
        half = _trainer(calib)
        with pytest.raises(Interrupted):  # stopped after step 2, in the middle of the pruning schedule
            run_training(half, tmp_path / "c.ckpt", RetrainHooks(stop=lambda: half.step == 2))
        resumed = _trainer(calib)
        resumed.restore(load_checkpoint(tmp_path / "c.ckpt"))
        run_training(resumed, None, RetrainHooks())
    assert blob_bytes(resumed.chip_model()[0]) == blob_bytes(full.chip_model()[0])


def test_v1_plans_have_no_pruning_state(calib):
    stack = tiny_stack()
    trainer = Retrainer(stack, [3, 1, 1], calibrate(stack, calib), CONFIG, (32, 32))
    assert trainer.start_kept == {} and not any(k.startswith("present") for k in trainer.net.state_dict())
    model, _ = trainer.chip_model()
    assert blob_bytes(model) == blob_bytes(quantize_stack(trainer.float_stack(), [3, 1, 1], trainer.fracs, (32, 32))[0])


def test_the_start_of_a_v2_plan_is_reconstructed_without_error_feedback():
    from chipq.quant.reconstruct import ReconstructConfig
    from chipq.retrain.config import RetrainConfigError
    from chipq.retrain.pipeline import reconstruct_config

    config = RetrainConfig()
    # a v1 plan starts exactly where it started before init_feedback (so its blob keeps its bytes)
    before = ReconstructConfig(positions=config.init_positions, seed=config.seed, threads=config.threads)
    assert reconstruct_config(config, [LayerSpec(3), LayerSpec(1)]) == before
    assert reconstruct_config(RetrainConfig()).error_feedback  # no plan: a v1 one (the benches' callers)
    assert not reconstruct_config(RetrainConfig(), PLAN).error_feedback
    assert not reconstruct_config(RetrainConfig(), [LayerSpec(3), LayerSpec(1, 7)]).error_feedback
    assert reconstruct_config(RetrainConfig(init_feedback="on"), PLAN).error_feedback
    assert not reconstruct_config(RetrainConfig(init_feedback="off"), [LayerSpec(3)]).error_feedback
    with pytest.raises(RetrainConfigError, match="init_feedback"):
        RetrainConfig(init_feedback="sometimes").check()
