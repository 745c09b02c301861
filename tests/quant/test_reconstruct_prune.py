"""Reconstruction with chip format v2 settings: kernels removed for the output, the rest re-fitted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reconstruct import images, last_map_error, stack

from chipq.formats.reader import from_bytes
from chipq.formats.writer import to_bytes as blob_bytes
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import quantize_stack
from chipq.quant.reconstruct import (
    ReconstructConfig,
    _prune_with_feedback,
    gram,
    inverse_factor,
    kept_for_output,
    kernel_saliency,
    reconstruct,
)

CONFIG = ReconstructConfig(positions=512, threads=1)
PLAN = [LayerSpec(3), LayerSpec(2, 6, 50), LayerSpec(1, 5, 40), LayerSpec(1, 5, 40)]


def _problem(seed=0, out_ch=5, in_ch=4, positions=300):
    rng = np.random.default_rng(seed)
    d = in_ch * 9
    z = torch.from_numpy(np.concatenate([rng.normal(size=(positions, d)) @ rng.normal(size=(d, d)), np.ones((positions, 1))], axis=1)).double()
    h = gram(z) + 0.1 * torch.eye(d + 1, dtype=torch.float64)
    v = torch.from_numpy(rng.normal(size=(out_ch, d + 1)))
    return z, h, v


def _objective(q, v, h):
    return float((q - v) @ h @ (q - v))


def _exact(v_row, keep_row, h):
    """argmin over q of (q - v)^T H (q - v) with the removed kernels at zero (stationarity on the free ones)."""
    free = torch.cat([keep_row.repeat_interleave(9), torch.tensor([True])])
    want = torch.zeros_like(v_row)
    want[free] = torch.linalg.solve(h[free][:, free], (h @ v_row)[free])
    return want


def test_pruning_with_feedback_is_exact_when_the_removed_kernels_come_first():
    _, h, v = _problem()
    keep = torch.tensor([[False, False, True, True], [False, True, True, True], [False] * 3 + [True], [True] * 4, [False, False, False, True]])
    got = _prune_with_feedback(v, inverse_factor(h), keep)
    for o in range(5):
        torch.testing.assert_close(got[o], _exact(v[o], keep[o], h), rtol=1e-8, atol=1e-8)


def test_pruning_with_feedback_recovers_most_of_the_error_of_plain_zeroing():
    _, h, v = _problem(4)
    keep = torch.from_numpy(np.random.default_rng(1).random((5, 4)) < 0.5)
    got = _prune_with_feedback(v, inverse_factor(h), keep)
    cut = torch.cat([~keep.repeat_interleave(9, dim=1), torch.zeros(5, 1, dtype=torch.bool)], dim=1)
    for o in range(5):
        assert torch.all(got[o][cut[o]] == 0)
        zeroed = torch.where(cut[o], torch.zeros_like(v[o]), v[o])
        best = _objective(_exact(v[o], keep[o], h), v[o], h)
        assert best - 1e-9 <= _objective(got[o], v[o], h) <= _objective(zeroed, v[o], h) + 1e-9


def test_obs_saliency_is_the_error_of_removing_one_kernel_with_refit():
    _, h, v = _problem(2)
    w = v[:, :-1].reshape(5, 4, 9)
    u = inverse_factor(h)
    saliency = kernel_saliency(w, h, u, "obs")
    for o, i in [(0, 0), (3, 2), (4, 3)]:
        keep = torch.ones(5, 4, dtype=torch.bool)
        keep[o, i] = False
        added = _objective(_exact(v[o], keep[o], h), v[o], h)
        assert float(saliency[o, i]) == pytest.approx(added, rel=1e-8)
    energy = kernel_saliency(w, h, None, "energy")
    assert float(energy[1, 1]) == pytest.approx(float(w[1, 1] @ h[9:18, 9:18] @ w[1, 1]))


def test_the_kept_set_is_layer_wide():
    """An output channel whose kernels all matter keeps all of them; one that barely matters loses them."""
    _, h, v = _problem(3)
    v[0] *= 100.0
    v[1] *= 0.01
    keep = kept_for_output(v[:, :-1].reshape(5, 4, 9), h, inverse_factor(h), 10, "obs")
    assert int(keep.sum()) == 10 and bool(keep[0].all()) and not bool(keep[1].any())


@pytest.fixture(scope="module")
def pruned():
    s = stack()
    calib = images(6, seed=1)
    rstack, rfracs, stats = reconstruct(s, PLAN, None, calib, CONFIG)
    return s, calib, rstack, rfracs


def test_reconstructed_pruned_layers_keep_exactly_their_share(pruned):
    s, calib, rstack, rfracs = pruned
    model, _ = quantize_stack(rstack, PLAN, rfracs, (32, 32))
    for layer, spec in zip(model.conv_layers(), PLAN):
        o, i = layer.alpha.shape
        assert layer.alpha_bits == spec.alpha_bits
        assert (layer.kept_kernels() if layer.pruned else o * i) == spec.kept(o * i)
        # the shadow weights are exactly the layer's: the removed kernels zero
        shadow = next(c for c in rstack.conv_layers() if c.name == layer.name)
        if layer.pruned and layer.name != "conv1_1":
            assert np.all(shadow.weight[~layer.present] == 0)
    assert from_bytes(blob_bytes(model)) == model


def test_choosing_for_the_output_beats_weight_energy(pruned):
    """Reconstruction's pruning (output saliency, refit) against the weight-only rule on the same plan."""
    s, calib, rstack, rfracs = pruned
    model, _ = quantize_stack(rstack, PLAN, rfracs, (32, 32))
    weight_only, _ = quantize_stack(s, PLAN, rfracs, (32, 32))
    test = images(4, seed=9)
    assert last_map_error(model, s, test) < 0.8 * last_map_error(weight_only, s, test)


@pytest.mark.parametrize("feedback", [False, True])
def test_both_routes_prune_and_obs_is_no_worse_than_energy(feedback):
    s = stack(1)
    calib = images(6, seed=2)
    test = images(4, seed=7)
    errors = {}
    for rule in ("obs", "energy"):
        config = ReconstructConfig(positions=512, threads=1, error_feedback=feedback, saliency=rule)
        rstack, rfracs, _ = reconstruct(s, PLAN, None, calib, config)
        errors[rule] = last_map_error(quantize_stack(rstack, PLAN, rfracs, (32, 32))[0], s, test)
    assert errors["obs"] <= errors["energy"] * 1.05
