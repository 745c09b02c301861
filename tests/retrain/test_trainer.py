"""Retraining (Algorithm 1): packed = quantization of the shadow weights, determinism, resume."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from floatcraft import random_stack

import chipq.retrain.trainer
from chipq.floatnet.model import FloatStack
from chipq.formats.writer import to_bytes as blob_bytes
from chipq.quant.compress import calibrate, weight_reports
from chipq.quant.quantize import quantize_stack
from chipq.retrain.config import RetrainConfig, RetrainConfigError
from chipq.retrain.pipeline import compress_retrained
from chipq.retrain.trainer import (
    CheckpointError,
    Interrupted,
    Retrainer,
    RetrainHooks,
    augment,
    distillation_loss,
    load_checkpoint,
    run_training,
    save_checkpoint,
    torch_settings,
    training_samples,
)
from chipq.retrieval.pooling_torch import region_descriptors

PLAN = [3, 1, 1]
CONFIG = RetrainConfig(steps=4, batch=4, crop=32, samples=8, lr=1e-3, seed=3)


def tiny_stack(seed: int = 0) -> FloatStack:
    """conv1_1 3->4, pool1, conv2_1 4->8, conv2_2 8->8: a VGG-shaped chain in miniature."""
    return random_stack([4, "M", 8, 8], seed=seed, bias_std=0.05)


def photos(count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour gradients with noise: images with some structure, 48x64."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:64]
    out = []
    for _ in range(count):
        base = np.stack([np.sin(xx / rng.uniform(3, 9) + c) * np.cos(yy / rng.uniform(3, 9)) for c in range(3)], axis=2)
        img = 128 + 90 * base + rng.normal(0, 12, base.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def calib():
    return np.stack([img[:32, :32].transpose(2, 0, 1) for img in photos(3, seed=9)])


def run(calib, config=CONFIG, checkpoint=None, resume=False, hooks=None, stack=None):
    with torch_settings(config.threads):
        return compress_retrained(
            stack or tiny_stack(), PLAN, calib, photos(), config,
            input_hw=(32, 32), checkpoint=checkpoint, resume=resume, hooks=hooks,
        )  # fmt: skip


def cached_trainer(calib):
    """(stack, fracs, retrainer) for the tiny stack, the training samples cached, ready to step."""
    stack = tiny_stack()
    fracs = calibrate(stack, calib)
    trainer = Retrainer(stack, PLAN, fracs, CONFIG, (32, 32))
    trainer.build_cache(photos())
    return stack, fracs, trainer


def test_doctests():
    assert doctest.testmod(chipq.retrain.trainer).failed == 0


def test_packed_model_is_the_quantization_of_the_final_shadow_weights(calib):
    stack = tiny_stack()
    fracs = calibrate(stack, calib)
    trainer = Retrainer(stack, PLAN, fracs, CONFIG, (32, 32))
    with torch_settings(CONFIG.threads):
        trainer.build_cache(photos())
        run_training(trainer, None, RetrainHooks())
    final = trainer.float_stack()
    want, _ = quantize_stack(final, PLAN, fracs, (32, 32))
    got, _ = trainer.chip_model()
    assert blob_bytes(got) == blob_bytes(want)
    # Training moved the trained layers and left the frozen conv1_1 alone.
    assert np.array_equal(final.conv_layers()[0].weight, stack.conv_layers()[0].weight)
    assert not np.array_equal(final.conv_layers()[2].weight, stack.conv_layers()[2].weight)
    ptq, _ = quantize_stack(stack, PLAN, fracs, (32, 32))
    assert blob_bytes(got) != blob_bytes(ptq)


def test_compress_retrained_packs_its_own_shadow_weights(calib):
    result = run(calib)
    assert result.retrain["steps"] == 4 and result.retrain["trained_layers"] == ["conv2_1", "conv2_2"]
    assert result.act_fracs == calibrate(tiny_stack(), calib)
    # the per-layer error compares the blob with the float model, as on the post-training route
    # (against the shadow weights it was quantized from, the trained 3-bit layers read 0.000)
    assert result.reports == weight_reports(tiny_stack(), result.model)
    assert all(report.rel_l2 > 0 for report in result.reports)


def test_same_seed_same_bytes_other_seed_other_bytes(calib):
    first = blob_bytes(run(calib).model)
    assert blob_bytes(run(calib).model) == first
    other = RetrainConfig(**{**vars(CONFIG), "seed": 4})
    assert blob_bytes(run(calib, other).model) != first


def test_resume_after_an_interruption_gives_the_uninterrupted_result(calib, tmp_path):
    ckpt = tmp_path / "m.blob.ckpt"
    whole = blob_bytes(run(calib).model)
    steps_seen = []
    hooks = RetrainHooks(step=lambda stats: steps_seen.append(stats.step), stop=lambda: len(steps_seen) >= 2)
    with pytest.raises(Interrupted, match="after step 2"):
        run(calib, checkpoint=ckpt, hooks=hooks)
    assert load_checkpoint(ckpt)["step"] == 2
    resumed = run(calib, checkpoint=ckpt, resume=True)
    assert resumed.retrain["resumed_at_step"] == 2 and resumed.retrain["steps"] == 4
    assert blob_bytes(resumed.model) == whole


def test_a_crash_inside_a_step_leaves_the_last_finished_step(calib, tmp_path):
    ckpt = tmp_path / "c.ckpt"
    seen = []

    def boom(stats):
        seen.append(stats.step)
        if stats.step == 3:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        run(calib, checkpoint=ckpt, hooks=RetrainHooks(step=boom))
    assert load_checkpoint(ckpt)["step"] == 3 and seen == [1, 2, 3]


def test_resume_refuses_other_settings_and_other_images(calib, tmp_path):
    ckpt = tmp_path / "s.ckpt"
    stack, fracs, trainer = cached_trainer(calib)
    trainer.train_step()
    save_checkpoint(ckpt, trainer)
    other = Retrainer(stack, PLAN, fracs, RetrainConfig(**{**vars(CONFIG), "lr": 0.5}), (32, 32))
    with pytest.raises(RetrainConfigError, match="settings"):
        other.restore(load_checkpoint(ckpt))
    longer = Retrainer(stack, PLAN, fracs, RetrainConfig(**{**vars(CONFIG), "steps": 9}), (32, 32))
    longer.restore(load_checkpoint(ckpt))  # more steps is allowed
    with pytest.raises(RetrainConfigError, match="other training images"):
        longer.build_cache(photos(seed=5))
    with pytest.raises(RetrainConfigError, match="model weights"):
        Retrainer(tiny_stack(seed=1), PLAN, fracs, CONFIG, (32, 32)).restore(load_checkpoint(ckpt))
    with pytest.raises(RetrainConfigError, match="chip input size"):
        Retrainer(stack, PLAN, fracs, CONFIG, (32, 48)).restore(load_checkpoint(ckpt))
    with pytest.raises(RetrainConfigError, match="activation shifts"):  # other calibration images
        Retrainer(stack, PLAN, [f + 1 for f in fracs], CONFIG, (32, 32)).restore(load_checkpoint(ckpt))


def test_a_damaged_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(bad)
    torch.save({"version": 99}, bad)
    with pytest.raises(CheckpointError, match="not a chipq retraining checkpoint"):
        load_checkpoint(bad)


def test_samples_depend_on_seed_and_images_only():
    images = photos()
    first = training_samples(images, CONFIG)
    assert first.shape == (8, 3, 32, 32) and first.dtype == np.uint8
    assert np.array_equal(training_samples(images, CONFIG), first)
    other = training_samples(images, RetrainConfig(**{**vars(CONFIG), "seed": 4}))
    assert not np.array_equal(other, first)


def test_augment_keeps_pixels_of_the_image():
    """A full-image crop at the image's own size is the image, flipped and turned (exact)."""
    img = photos(1)[0][:40, :40]
    rng = np.random.default_rng(0)
    for _ in range(10):
        sample = augment(img, 40, rng).transpose(1, 2, 0)
        variants = [np.rot90(v, k) for v in (img, img[:, ::-1]) for k in range(4)]
        assert sample.shape == (40, 40, 3)
        if sample.tobytes() in {v.tobytes() for v in variants}:
            return
    pytest.fail("no full-size crop in ten draws")  # CROP_SHARE ends at 1.0: some draw is near full


def test_loss_is_zero_for_a_perfect_student_and_cosine_one():
    maps = torch.rand(2, 8, 7, 7)
    loss, cosine = distillation_loss(maps, maps, CONFIG)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert cosine.tolist() == pytest.approx([1.0, 1.0])
    assert region_descriptors(maps).norm(dim=1).tolist() == pytest.approx([1.0, 1.0])


def test_centred_descriptor_loss_compares_descriptors_minus_the_mean():
    torch.manual_seed(0)
    student, teacher = torch.rand(3, 8, 7, 7), torch.rand(3, 8, 7, 7)
    center = region_descriptors(teacher).mean(dim=0)
    config = RetrainConfig(**{**vars(CONFIG), "map_weight": 0.0, "desc_center": True})
    loss, cosine = distillation_loss(student, teacher, config, center)
    a = torch.nn.functional.normalize(region_descriptors(student) - center, dim=1)
    b = torch.nn.functional.normalize(region_descriptors(teacher) - center, dim=1)
    assert float(loss) == pytest.approx(float((1 - (a * b).sum(dim=1)).mean()), rel=1e-6)
    plain_loss, plain_cosine = distillation_loss(student, teacher, RetrainConfig(**{**vars(config), "desc_center": False}))
    assert torch.equal(cosine, plain_cosine)  # the reported cosines are the plain ones
    assert float(loss) > float(plain_loss)  # the shared part no longer hides the differences


def test_centred_run_caches_the_mean_teacher_descriptor_and_repeats(calib):
    config = RetrainConfig(**{**vars(CONFIG), "desc_center": True})
    stack = tiny_stack()
    trainer = Retrainer(stack, PLAN, calibrate(stack, calib), config, (32, 32))
    with torch_settings(config.threads):
        trainer.build_cache(photos())
    assert torch.allclose(trainer.center, region_descriptors(trainer.targets).mean(dim=0))
    first = blob_bytes(run(calib, config).model)
    assert first == blob_bytes(run(calib, config).model) and first != blob_bytes(run(calib).model)


def test_training_lowers_the_loss(calib):
    config = RetrainConfig(**{**vars(CONFIG), "steps": 30})
    stack = tiny_stack()
    trainer = Retrainer(stack, PLAN, calibrate(stack, calib), config, (32, 32))
    losses = []
    with torch_settings(config.threads):
        trainer.build_cache(photos())
        run_training(trainer, None, RetrainHooks(step=lambda s: losses.append(s.loss)))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


@pytest.mark.parametrize(
    "field, value, message",
    [("batch", 0, "batch 0"), ("crop", 16, "crop 16"), ("lr", 0.0, "learning rate"), ("train_from", "conv9_9", "no such conv")],
)
def test_bad_settings_are_refused(field, value, message):
    with pytest.raises(RetrainConfigError, match=message):
        Retrainer(tiny_stack(), PLAN, [4, 4, 4], RetrainConfig(**{**vars(CONFIG), field: value}))


def test_resume_refuses_a_checkpoint_beyond_the_steps_asked_for(calib, tmp_path):
    ckpt = tmp_path / "far.ckpt"
    stack, fracs, trainer = cached_trainer(calib)
    for _ in range(3):
        trainer.train_step()
    save_checkpoint(ckpt, trainer)
    fewer = Retrainer(stack, PLAN, fracs, RetrainConfig(**{**vars(CONFIG), "steps": 2}), (32, 32))
    with pytest.raises(RetrainConfigError, match="already at step 3"):
        fewer.restore(load_checkpoint(ckpt))


def test_an_unwritable_checkpoint_is_a_one_line_error(calib, tmp_path):
    stack = tiny_stack()
    trainer = Retrainer(stack, PLAN, calibrate(stack, calib), CONFIG, (32, 32))
    with pytest.raises(CheckpointError, match="cannot write the checkpoint"):
        save_checkpoint(tmp_path / "missing" / "x.ckpt", trainer)
    assert list(tmp_path.iterdir()) == []
