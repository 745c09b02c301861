"""Batch-norm folding: an inference-mode batch norm merged into the conv before it."""

from __future__ import annotations

import numpy as np

# torchvision's BatchNorm2d default; a state dict does not store eps.
BN_EPS = 1e-5


def fold_batchnorm(
    weight: np.ndarray,
    bias: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference-mode batch norm into the conv before it, in float64, back to float32.

    ``w' = w·γ/sqrt(var+eps)``, ``b' = (b − mean)·γ/sqrt(var+eps) + β``.

    >>> w, b = fold_batchnorm(np.ones((1, 1, 3, 3)), np.zeros(1), np.array([2.0]), np.array([1.0]),
    ...                       np.array([0.5]), np.array([3.0]), eps=1.0)
    >>> float(w[0, 0, 0, 0]), float(b[0])
    (1.0, 0.5)
    """
    f64 = np.float64
    scale = np.asarray(gamma, f64) / np.sqrt(np.asarray(var, f64) + float(eps))
    new_w = np.asarray(weight, f64) * scale[:, None, None, None]
    new_b = (np.asarray(bias, f64) - np.asarray(mean, f64)) * scale + np.asarray(beta, f64)
    return new_w.astype(np.float32), new_b.astype(np.float32)
