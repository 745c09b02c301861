"""The streamed reconstruction and calibration (issue 25) compute what the whole-batch forms did.

Reconstruction keeps both networks' maps in a spill folder a chunk at a time (`_Maps`), calibration
keeps only each layer's fixed-stride sample (`RunningSample`), `refit_alphas` makes its Gram
matrices a block of outputs at a time: each is checked here against the whole-batch computation
it replaced, bit for bit.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch
from helpers import tiny_vgg

from chipq.quant import reconstruct as rc
from chipq.quant.calibrate import RunningSample, choose_fracs, subsample
from chipq.quant.chipnet import activations
from chipq.quant.compress import calibrate, conv_outputs


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from chipq.importers import load_model

    path = tmp_path_factory.mktemp("m") / "tiny.pt"
    torch.save(tiny_vgg(seed=3).state_dict(), path)
    return load_model(path).without_trailing_pool()


@pytest.mark.parametrize("limit", [7, 1000, 1 << 20])
def test_running_sample_equals_subsample_of_the_whole(limit, monkeypatch):
    monkeypatch.setattr("chipq.quant.calibrate.MAX_SAMPLES", limit)
    x = np.random.default_rng(0).standard_normal((13, 3, 5, 7)).astype(np.float32)
    running, cut = RunningSample(x.size), RunningSample(x.size)
    for lo, hi in ((0, 1), (1, 8), (8, 9), (9, 13)):
        running.add(x[lo:hi])
        cut.add(x[lo:hi], relu=True)  # the ReLU of the kept values only
    assert np.array_equal(running.values(), subsample(x))
    assert np.array_equal(cut.values(), subsample(np.maximum(x, 0)))
    assert (x < 0).any() and cut.values().dtype == np.float32


def test_streamed_calibration_equals_the_whole_batch(stack, monkeypatch):
    calib = np.random.default_rng(2).integers(0, 256, size=(11, 3, 48, 40), dtype=np.uint8)
    assert calibrate(stack, calib) == choose_fracs(conv_outputs(stack, calib))
    monkeypatch.setattr("chipq.quant.calibrate.MAX_SAMPLES", 997)  # a stride through the chunks
    assert calibrate(stack, calib) == choose_fracs(conv_outputs(stack, calib))


def test_grid_maps_keep_the_chips_activations_exactly(tmp_path):
    y = torch.randn(11, 3, 6, 5) * 4
    store = rc._Maps.grid(tmp_path, y.shape, 5)
    for i in range(0, 11, rc.CHUNK):
        store.append(activations(y[i : i + rc.CHUNK], 5))
    assert torch.equal(torch.cat(list(store.chunks())), activations(y, 5))
    store.drop()
    assert not list(tmp_path.iterdir())


def test_patches_of_streamed_maps_equal_the_whole_batch(tmp_path):
    x = torch.randn(19, 4, 6, 5)
    store = rc._Maps.floats(tmp_path, x.shape)
    for i in range(0, 19, rc.CHUNK):
        store.append(x[i : i + rc.CHUNK])
    rows = rc._positions(x.shape, 200, np.random.default_rng(1))
    assert torch.equal(store.patches(rows), rc._patches(x, rows))


def test_alpha_grams_in_blocks_equal_all_at_once(monkeypatch):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(900, 9 * 12 + 1, generator=g)
    hessian, cross = rc.gram(z), torch.randn(300, 900, generator=g) @ z
    masks = torch.randint(-3, 4, (300, 12, 9), generator=g).float()
    blocked = rc.refit_alphas(masks, hessian, cross, 1e-3)
    monkeypatch.setattr(rc, "GRAM_CHUNK", 1024)  # every output's Gram matrix at once
    assert torch.equal(blocked, rc.refit_alphas(masks, hessian, cross, 1e-3))


def test_refit_alphas_holds_one_block_of_grams_at_a_time(monkeypatch):
    """A 512-channel layer's block of Gram matrices is 256 MB: the last block is freed before the
    next one is made (holding both was the 2 MB plan's peak, 2.2 GB)."""
    import weakref

    made = []
    real = rc._alpha_grams

    def alpha_grams(m32, h32):
        assert all(ref() is None for ref in made), "the previous block of Gram matrices is still alive"
        grams = real(m32, h32)
        made.append(weakref.ref(grams))
        return grams

    monkeypatch.setattr(rc, "_alpha_grams", alpha_grams)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 9 * 4 + 1, generator=g)
    masks = torch.randint(-3, 4, (300, 4, 9), generator=g).float()
    rc.refit_alphas(masks, rc.gram(z), torch.randn(300, 500, generator=g) @ z, 1e-3)
    assert len(made) == -(-300 // rc.GRAM_CHUNK) > 1


def test_reconstruction_leaves_no_spill_behind(stack, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    calib = np.random.default_rng(1).integers(0, 256, size=(9, 3, 32, 32), dtype=np.uint8)
    fitted, fracs, stats = rc.reconstruct(stack, [3] * 13, None, calib, rc.ReconstructConfig(positions=100))
    assert len(fracs) == len(stats) == 13 and len(fitted.conv_layers()) == 13
    assert not list(tmp_path.glob("chipq-maps-*"))  # (torch may leave its own cache folder there)


@pytest.mark.parametrize("setting", [(2, 5, 50), (3, 8, 100)], ids=["2a5k50", "3"])
def test_last_use_of_a_target_lets_go_of_its_solve_and_changes_nothing(setting):
    """`_quantize_target(..., last=True)` frees the damped H and its inverse factor before the α refit
    (the compress peak) and makes the same weights as a target that is kept."""
    from chipq.floatnet.model import FloatConv
    from chipq.quant.plan import LayerSpec

    g = torch.Generator().manual_seed(1)
    conv = FloatConv("c", torch.randn(6, 4, 3, 3, generator=g).numpy(), torch.randn(6, generator=g).numpy())
    z = torch.cat([torch.randn(400, 36, generator=g), torch.ones(400, 1)], dim=1)
    out = z @ torch.cat([torch.from_numpy(conv.weight.reshape(6, 36)), torch.from_numpy(conv.bias)[:, None]], dim=1).T
    config = rc.ReconstructConfig(positions=400, threads=1)
    spec = LayerSpec(*setting)
    kept = rc._target(conv, z, out, config)
    first = rc._quantize_target(kept, spec, config)
    assert kept.damped is not None
    last = rc._target(conv, z, out, config)
    second = rc._quantize_target(last, spec, config, last=True)
    assert last.damped is None and last.u is None
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_pruning_errors_solve_each_rows_triangular_system():
    """`_block_errors` by forward substitution over the columns, every row at once (no b x b system
    per row: all 512 rows of a 512-channel layer held 0.3-0.45 GB): on each row the cut columns'
    errors solve ``e_S U_SS = w_S`` and the kept columns' are zero."""
    rng = np.random.default_rng(4)
    u = torch.triu(torch.from_numpy(rng.standard_normal((27, 27)))) + 5 * torch.eye(27, dtype=torch.float64)
    w = torch.from_numpy(rng.standard_normal((150, 27)))
    cut = torch.from_numpy(rng.random((150, 27)) < 0.4)
    errors = rc._block_errors(w, u, cut)
    assert torch.all(errors[~cut] == 0)
    for row in range(150):
        s = cut[row]
        want = torch.linalg.solve_triangular(u[s][:, s].T, w[row, s][:, None], upper=False)[:, 0]
        torch.testing.assert_close(errors[row, s], want, rtol=1e-12, atol=1e-12)
