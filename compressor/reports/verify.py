"""What `chipq verify` found: the report, its JSON form, and the pure measures it is made of.

The checks (run by `chipq.pipeline.verify`), each a small function returning plain data:

- integrity: the reader's checks (structure, ranges, CRCs, accumulator bound) — done by reading;
- exactness: the fast executor equals the golden one on every element of every layer;
- headroom: the largest |accumulator| the golden executor saw per layer, against 2^31 − 1;
- fidelity (with the float model): per conv layer relative error, SQNR and cosine of the
  dequantized integer map against the float map, and the cosine of the NIP descriptors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from chipq.formats import constants as C
from chipq.formats.model import ChipModel


@dataclass
class LayerAgreement:
    """How one layer's integer output compares with the float model's."""

    name: str
    rel_error: float
    sqnr_db: float
    cosine: float


@dataclass
class VerifyReport:
    """Everything `chipq verify` found; `failures` empty means every check passed."""

    images: int
    golden_images: int
    format_version: int = 1  # the blob's chip format (2: narrower alphas or pruned kernels)
    kernels: int = 0  # 3x3 kernels of the conv layers, and how many of them the blob stores
    kept_kernels: int = 0
    fast_route: str = ""
    exact_layers: int = 0
    mismatches: list[str] = field(default_factory=list)
    acc_peaks: dict[str, int] = field(default_factory=dict)
    agreement: list[LayerAgreement] = field(default_factory=list)
    nip_cosines: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "golden_images": self.golden_images,
            "format_version": self.format_version,
            "kernels": self.kernels,
            "kept_kernels": self.kept_kernels,
            "fast_route": self.fast_route,
            "exact": not self.mismatches,
            "exact_layers": self.exact_layers,
            "mismatches": self.mismatches,
            "accumulator": {
                name: {"peak": peak, "limit": C.ACC_MAX, "headroom_bits": headroom_bits(peak)}
                for name, peak in self.acc_peaks.items()
            },
            "agreement": [vars(row) for row in self.agreement],
            "nip_cosine": {
                "mean": float(np.mean(self.nip_cosines)) if self.nip_cosines else None,
                "min": float(np.min(self.nip_cosines)) if self.nip_cosines else None,
            },
            "failures": self.failures,
            "ok": not self.failures,
        }


def headroom_bits(peak: int) -> float:
    """Bits to spare between the largest |accumulator| seen and the 32-bit limit.

    >>> round(headroom_bits(2**30), 6)
    1.0
    """
    return math.log2(C.ACC_MAX / peak) if peak > 0 else float(C.ACC_BITS - 1)


def compare_exact(model: ChipModel, fast_taps: list[np.ndarray], golden_taps: list[np.ndarray], image: str) -> list[str]:
    """One line per layer where the fast output differs from the golden one (any element)."""
    problems = []
    for layer, fast, gold in zip(model.layers, fast_taps, golden_taps):
        if fast.shape != gold.shape:
            problems.append(f"{image}: layer {layer.name}: shape {fast.shape} != golden {gold.shape}")
        elif not np.array_equal(fast, gold):
            count = int((fast != gold).sum())
            problems.append(f"{image}: layer {layer.name}: {count} of {gold.size} elements differ")
    return problems


def agreement(name: str, integer_map: np.ndarray, frac: int, float_map: np.ndarray) -> LayerAgreement:
    """Dequantized integer map vs float map: relative L2 error, SQNR (dB) and cosine."""
    return AgreementSums().add(integer_map, frac, float_map).result(name)


class AgreementSums:
    """The float64 sums `agreement` is made of, added up a few images at a time (verify streams the
    float model's layers instead of keeping every map). One `add` gives exactly `agreement`'s
    numbers (``np.linalg.norm`` of a vector is the square root of its dot product); several add
    the same terms in another order."""

    def __init__(self) -> None:
        self.err2 = self.float2 = self.int2 = self.cross = 0.0

    def add(self, integer_map: np.ndarray, frac: int, float_map: np.ndarray) -> "AgreementSums":
        q = integer_map.astype(np.float64).ravel() * 2.0**-frac
        f = float_map.astype(np.float64).ravel()
        self.cross += q @ f
        self.int2 += q.dot(q)
        self.float2 += f.dot(f)
        np.subtract(q, f, out=q)  # q - f in place: two float64 copies of the maps, not three
        self.err2 += q.dot(q)
        return self

    def result(self, name: str) -> LayerAgreement:
        err, norm_f, norm_q = np.sqrt(self.err2), np.sqrt(self.float2), np.sqrt(self.int2)
        rel = float(err / norm_f) if norm_f > 0 else float(err > 0)
        sqnr = float(20 * np.log10(norm_f / err)) if err > 0 else float("inf")
        cosine = float(self.cross / (norm_q * norm_f)) if norm_q > 0 and norm_f > 0 else 0.0
        return LayerAgreement(name, rel, sqnr, cosine)
