"""Data-driven reconstruction: exact shadow weights, lower output error, determinism, retraining start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chipq.floatnet.model import FloatConv, FloatPool, FloatStack
from chipq.floatnet.reference import FloatReference
from chipq.formats.writer import to_bytes as blob_bytes
from chipq.quant.compress import calibrate, compress
from chipq.quant.quantize import dequantized_weights, fit_kernels, quantize_kernels, quantize_stack
from chipq.quant.reconstruct import ReconstructConfig, _gptq, gram, inverse_factor, reconstruct, refit_alphas
from chipq.retrain.config import RetrainConfig, RetrainConfigError
from chipq.retrain.qat import InputFold
from chipq.retrain.trainer import Retrainer, torch_settings, training_samples

PLAN = [3, 1, 1, 1]
CONFIG = ReconstructConfig(positions=512, threads=1)


def stack(seed: int = 0) -> FloatStack:
    """conv1_1 3->8, pool1, conv2_1 8->16, conv2_2 16->16, conv2_3 16->16 (He-initialised)."""
    rng = np.random.default_rng(seed)

    def conv(name, out_ch, in_ch):
        weight = rng.normal(size=(out_ch, in_ch, 3, 3)) * np.sqrt(2 / (9 * in_ch))
        return FloatConv(name, weight.astype(np.float32), (rng.normal(size=out_ch) * 0.05).astype(np.float32))

    layers = [conv("conv1_1", 8, 3), FloatPool("pool1"), conv("conv2_1", 16, 8), conv("conv2_2", 16, 16), conv("conv2_3", 16, 16)]
    return FloatStack(layers)


def images(count: int, seed: int) -> np.ndarray:
    """Smooth random colour fields with noise, uint8 (count, 3, 32, 32)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    out = []
    for _ in range(count):
        base = np.stack([np.sin(xx / rng.uniform(2, 8) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(2, 8)) for _ in range(3)])
        out.append(np.clip(128 + 90 * base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def last_map_error(model, float_stack: FloatStack, pixels: np.ndarray) -> float:
    """Relative L2 error of the chip's last map (integer executor) to the float model's."""
    from chipq.executor.golden import run as golden_run
    from chipq.floatnet.reference import FloatReference

    ref = FloatReference(float_stack).run(pixels)
    chip = np.stack([golden_run(model, img) for img in pixels]).astype(np.float64) * 2.0 ** -model.activation_fracs()[-1]
    return float(np.linalg.norm(chip - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def done():
    s = stack()
    calib = images(6, seed=1)
    fracs = calibrate(s, calib)
    return s, calib, fracs, reconstruct(s, PLAN, fracs, calib, CONFIG)


def test_shadow_weights_are_exactly_their_quantization(done):
    """quantize_stack of the reconstructed stack stands for exactly the reconstructed weights, so a
    blob made from it (or retraining started from it) is the quantization of these shadow weights."""
    s, _, _, (rstack, rfracs, _) = done
    model, _ = quantize_stack(rstack, PLAN, rfracs, (32, 32))
    fold = InputFold.of(rstack)
    for index, (conv, layer) in enumerate(zip(rstack.conv_layers(), model.conv_layers())):
        expected = fold.apply_numpy(conv).weight if index == 0 else conv.weight
        np.testing.assert_allclose(dequantized_weights(layer), expected, rtol=1e-6, atol=1e-9)
        if index:
            assert np.array_equal(dequantized_weights(layer), conv.weight.astype(np.float64))
    assert model.activation_fracs()[-1] == rfracs[-1]


def test_lower_output_error_than_weight_fit_on_unseen_images(done):
    s, _, fracs, (rstack, rfracs, stats) = done
    held_out = images(4, seed=2)
    plain, _ = quantize_stack(s, PLAN, fracs, (32, 32))
    rebuilt, _ = quantize_stack(rstack, PLAN, rfracs, (32, 32))
    assert last_map_error(rebuilt, s, held_out) < 0.8 * last_map_error(plain, s, held_out)
    assert [st.name for st in stats] == [c.name for c in s.conv_layers()]
    assert all(0 <= st.rel_out_err < 1 for st in stats)


def test_deterministic_bytes(done):
    s, calib, fracs, (rstack, rfracs, _) = done
    again, again_fracs, _ = reconstruct(s, PLAN, fracs, calib, CONFIG)
    a = blob_bytes(quantize_stack(rstack, PLAN, rfracs, (32, 32))[0])
    b = blob_bytes(quantize_stack(again, PLAN, again_fracs, (32, 32))[0])
    assert a == b


def test_ablations_each_run_and_differ(done):
    s, calib, fracs, (rstack, rfracs, _) = done
    changes = ({"least_squares_target": False}, {"error_feedback": False}, {"refit_fracs": False},
               {"float_prior": False}, {"refit_alphas": False})  # fmt: skip
    for change in changes:
        other, other_fracs, _ = reconstruct(s, PLAN, fracs, calib, ReconstructConfig(positions=512, threads=1, **change))
        if change == {"refit_fracs": False}:
            assert other_fracs == fracs  # the float calibration's shifts are kept
            continue
        model = quantize_stack(other, PLAN, other_fracs, (32, 32))[0]
        assert blob_bytes(model) != blob_bytes(quantize_stack(rstack, PLAN, rfracs, (32, 32))[0])


def test_gptq_without_correlation_is_plain_rounding():
    """With H = I the error feedback has nothing to push: each kernel is rounded on its own."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(5, 18))
    v = torch.from_numpy(np.concatenate([w, np.zeros((5, 1))], axis=1))
    q = _gptq(v, torch.eye(19, dtype=torch.float64), 18, 1, 64.0)[0].numpy()
    alpha, m = fit_kernels(w.reshape(-1, 9), 1)
    alpha = np.floor(alpha * 64 + 0.5) / 64
    np.testing.assert_allclose(q[:, :18], (alpha[:, None] * m).reshape(5, 18))
    assert np.all(q[:, 18] == 0)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5])
def test_fit_kernels_finds_an_exact_alpha_m(bits):
    """A kernel that is alpha * M with some level of magnitude 1 is quantized to itself."""
    rng = np.random.default_rng(bits)
    top = (1 << bits) - 1
    m = rng.choice(np.arange(-top, top + 1, 2), size=(200, 9)).astype(np.float64)
    m[:, 0] = rng.choice([-1.0, 1.0], size=200)
    alpha_int = rng.integers(1, 256, size=200)
    w = (alpha_int[:, None] * m / 2.0**9).reshape(200, 1, 3, 3)
    a, codes, shift = quantize_kernels(w, bits)
    back = a.astype(np.float64)[..., None, None] * (2.0 * codes - top) / 2.0**shift
    assert np.array_equal(back, w)


def test_compress_default_reconstructs_and_none_is_weight_only(done):
    s, calib, fracs, (rstack, rfracs, _) = done
    result = compress(s, PLAN, calib, (32, 32), reconstruction=CONFIG)
    assert blob_bytes(result.model) == blob_bytes(quantize_stack(rstack, PLAN, rfracs, (32, 32))[0])
    assert result.act_fracs == rfracs
    plain = compress(s, PLAN, calib, (32, 32), reconstruction=None)
    assert blob_bytes(plain.model) == blob_bytes(quantize_stack(s, PLAN, fracs, (32, 32))[0])
    assert [r.name for r in result.reports] == [c.name for c in s.conv_layers()]


def test_retraining_starts_from_the_reconstruction(done):
    s, calib, fracs, (rstack, rfracs, _) = done
    config = RetrainConfig(steps=2, batch=2, crop=32, samples=4, seed=1, threads=1)
    with torch_settings(1):
        trainer = Retrainer(s, PLAN, rfracs, config, (32, 32), init=rstack)
        assert blob_bytes(trainer.chip_model()[0]) == blob_bytes(quantize_stack(rstack, PLAN, rfracs, (32, 32))[0])
        # the teacher is the original float model, not the starting weights
        photos = [img.transpose(1, 2, 0) for img in images(2, seed=5)]
        trainer.build_cache(photos)
        teacher = FloatReference(s, batch=4).run(training_samples(photos, config))
        assert np.array_equal(trainer.targets.numpy(), teacher)
        assert trainer.model_hash != Retrainer(s, PLAN, rfracs, config, (32, 32)).model_hash


def test_retrain_config_checks_init():
    with pytest.raises(RetrainConfigError):
        RetrainConfig(init="magic").check()
    with pytest.raises(RetrainConfigError):
        RetrainConfig(init_images=0).check()


def test_refit_alphas_recovers_the_alphas_and_bias_that_made_the_output():
    """Outputs made by known α·M (α on an 8-bit grid) and a bias: the joint solve finds them again."""
    rng = np.random.default_rng(7)
    out_ch, in_ch, positions = 6, 4, 400
    masks = torch.from_numpy(np.where(rng.random((out_ch, in_ch, 9)) < 0.5, -1.0, 1.0))
    alphas = torch.from_numpy(rng.integers(1, 256, size=(out_ch, in_ch)) / 1024.0)
    bias = torch.from_numpy(rng.normal(size=out_ch))
    z = torch.from_numpy(np.concatenate([rng.normal(size=(positions, in_ch * 9)), np.ones((positions, 1))], axis=1))
    weights = (alphas[:, :, None] * masks).reshape(out_ch, -1)
    target = z[:, :-1] @ weights.T + bias
    flipped = masks.clone()
    flipped[0, 0] = -flipped[0, 0]  # a flipped mask comes back as a negative α, i.e. the mask flipped again
    q = refit_alphas(flipped, z.T @ z, target.T @ z, ridge=0.0)
    np.testing.assert_allclose(q[:, :-1].numpy(), weights.numpy(), atol=1e-6)
    np.testing.assert_allclose(q[:, -1].numpy(), bias.numpy(), atol=1e-4)


def test_gram_and_inverse_factor_on_a_real_sized_block():
    z = torch.randn(300, 37, generator=torch.Generator().manual_seed(0))
    h = gram(z, block=8)
    torch.testing.assert_close(h, z.T @ z, rtol=1e-5, atol=1e-4)
    u = inverse_factor(h.double() + torch.eye(37, dtype=torch.float64))
    torch.testing.assert_close(u.T @ u, torch.linalg.inv(h.double() + torch.eye(37, dtype=torch.float64)))


def test_without_float_fracs_the_shifts_come_from_the_same_pass(done):
    """fracs=None: the float shifts are chosen on the reconstruction's own images (no calibration pass)."""
    s, calib, fracs, (rstack, rfracs, stats) = done
    other, other_fracs, other_stats = reconstruct(s, PLAN, None, calib, CONFIG)
    assert [st.float_frac for st in other_stats] == fracs  # calibrate() on the same images agrees
    assert blob_bytes(quantize_stack(other, PLAN, other_fracs, (32, 32))[0]) == blob_bytes(quantize_stack(rstack, PLAN, rfracs, (32, 32))[0])


def test_torch_settings_turn_deterministic_algorithms_on_and_restore_them_without_the_compiler():
    """The flag `torch.use_deterministic_algorithms` sets, set and restored; and inductor's too
    once something has loaded it. A fresh process reconstructing does not import torch._inductor
    (2.5 s)."""
    import subprocess
    import sys

    from chipq.quant.reconstruct import deterministic_algorithms, torch_settings

    before = torch.are_deterministic_algorithms_enabled()
    with torch_settings(1):
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled() == before
    import torch._inductor.config as inductor_config

    old = inductor_config.deterministic
    try:
        deterministic_algorithms(True)
        assert inductor_config.deterministic is True and torch.are_deterministic_algorithms_enabled()
    finally:
        deterministic_algorithms(before)
        inductor_config.deterministic = old
    probe = (
        "import sys, numpy as np; from chipq.quant.reconstruct import torch_settings\n"
        "with torch_settings(1): pass\n"
        "print('torch._inductor' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
