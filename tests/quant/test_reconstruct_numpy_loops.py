"""The reconstruction's numpy loops (GPTQ's columns, the α Gram matrices) make the bytes the torch
loops they replaced made: the default blob of `chipq compress` does not change with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chipq.quant import reconstruct as rc
from chipq.quant.quantize import fit_kernels, nearest_level, round_alpha


def torch_gptq_block(w1, u1, bits, scale, alpha_bits, kept):
    """The torch column loop `_gptq_block` replaced, as it ran inside `_gptq` (the reference)."""
    w1 = w1.clone()
    err1 = torch.zeros_like(w1)
    levels = torch.empty_like(w1)
    for j in range(w1.shape[1]):
        if j % 9 == 0:
            a, _ = fit_kernels(w1[:, j : j + 9].numpy(), bits)
            alpha = round_alpha(a, scale, alpha_bits) / scale
            if kept is not None:
                alpha = np.where(kept[:, j // 9].numpy(), alpha, 0.0)
            alpha_t = torch.from_numpy(alpha)
            safe = torch.where(alpha_t > 0, alpha_t, torch.ones_like(alpha_t))
        col = w1[:, j]
        level = torch.from_numpy(nearest_level((col / safe).numpy(), bits))
        levels[:, j] = level
        qcol = alpha_t * level
        e = (col - qcol) / u1[j, j]
        w1[:, j:] -= e[:, None] * u1[j, j:][None, :]
        w1[:, j] = qcol
        err1[:, j] = e
    return w1, err1, levels


def hessian_factor(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.relu(torch.randn(3 * d, d, generator=g))
    h = z.T @ z
    torch.diagonal(h).add_(0.3 * float(torch.diagonal(h).mean()))
    return rc.inverse_factor(h)


@pytest.mark.parametrize("bits, alpha_bits, pruned", [(1, 8, False), (3, 8, False), (2, 5, True)])
def test_gptq_block_in_numpy_equals_the_torch_loop(bits, alpha_bits, pruned):
    g = torch.Generator().manual_seed(bits)
    out_ch, kernels = 40, 16
    w1 = torch.randn(out_ch, 9 * kernels, generator=g) * 0.05
    u1 = hessian_factor(9 * kernels, bits)
    kept = torch.rand(out_ch, kernels, generator=g) < 0.6 if pruned else None
    want = torch_gptq_block(w1, u1, bits, 512.0, alpha_bits, kept)
    got = rc._gptq_block(w1.numpy(), u1.numpy(), bits, 512.0, alpha_bits, None if kept is None else kept.numpy())
    for a, b in zip(want, got):
        assert a.dtype == torch.from_numpy(b).dtype
        assert torch.equal(a, torch.from_numpy(b))


def torch_alpha_grams(m32: torch.Tensor, h32: torch.Tensor) -> torch.Tensor:
    """The torch form `_alpha_grams` replaced (torch's own sum over the 9 taps)."""
    out_ch, k, taps = m32.shape
    grams = torch.empty(out_ch, k, k, dtype=h32.dtype)
    for kk in range(k):
        part = m32[:, kk, :] @ h32[kk * taps : (kk + 1) * taps, kk * taps :]
        row = (part.view(out_ch, k - kk, taps) * m32[:, kk:, :]).sum(dim=2)
        grams[:, kk, kk:] = row
        grams[:, kk:, kk] = row
    return grams


def test_alpha_grams_in_numpy_equal_the_torch_sums():
    """Several mirrored row blocks (K > GRAM_MIRROR_ROWS), 3-bit levels and removed kernels (0),
    values over many orders of magnitude (where a different summation order shows)."""
    g = torch.Generator().manual_seed(3)
    k = rc.GRAM_MIRROR_ROWS * 2 + 13
    z = torch.randn(2 * 9 * k, 9 * k, generator=g) * torch.exp(2 * torch.randn(9 * k, generator=g))
    h32 = rc.gram(z)
    masks = torch.randint(-3, 4, (24, k, 9), generator=g).float()
    masks[masks.remainder(2) == 0] = 0.0
    assert torch.equal(rc._alpha_grams(masks, h32), torch_alpha_grams(masks, h32))
