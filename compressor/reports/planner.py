"""What `chipq plan` found, rendered: the result object, its JSON form, the front table and picture.

The steps that find it are `chipq.pipeline.plan.make_plan`'s (its module docstring lists them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from chipq.errors import UsageError
from chipq.formats.fileio import atomic_write
from chipq.quant import PROBE
from chipq.quant.plan import PAPER_PLAN

if TYPE_CHECKING:  # PyTorch is not loaded to render (`chipq --help` imports this module)
    from chipq.quant import sensitivity

__all__ = ["PAPER_PLAN", "PlanResult", "SensitivityKind", "SensitivityProbe", "plot_front", "thin_front"]

POOL_NAME = "nip-quarter-turns-v1"
DEFAULT_SENS_IMAGES = 16  # two sets of 4 gave two plans (bench/plan.py, BENCHMARKS.md)


class SensitivityKind(str, Enum):
    """How each layer is quantized for the sensitivity (`chipq plan --sensitivity`).

    reconstructed: as post-training compress makes it; weight-only: from its float weights
    (the name `chipq.quant.sensitivity.WEIGHT_ONLY` gives its cache entries; a test pins them equal).
    """

    reconstructed = "reconstructed"
    weight_only = "weight-only"


class SensitivityProbe(str, Enum):
    """How each setting's fidelity is measured (`chipq plan --probe`, `chipq.quant.sensitivity.Probe`).

    exact: a pass of the rest of the network per setting, on every sensitivity photo; noise-gain:
    each setting's noise at its own layer's output, turned into descriptor distance by a few passes
    per layer on 4 of the photos (the default: a third of the time on VGG-16; docs/compress.md, plan stability).
    """

    exact = "exact"
    noise_gain = "noise-gain"

    def probe(self) -> sensitivity.Probe:
        from chipq.quant import sensitivity  # loads PyTorch: not at import (`chipq --help`)

        return sensitivity.BY_NAME[self.value]

    @classmethod
    def default(cls) -> "SensitivityProbe":
        """The planner's default (`chipq.quant.PROBE`)."""
        return cls(PROBE)

    @classmethod
    def of_method(cls, method: str) -> "SensitivityProbe":
        """The probe a measurement's method names (`chipq.quant.sensitivity.Probe.name`,
        ``Sensitivity.method``): "exact", or "noise-gain:..." with its settings."""
        return cls.exact if method == "exact" else cls.noise_gain


RECONSTRUCTED = SensitivityKind.reconstructed.value
SENSITIVITY_KINDS = tuple(kind.value for kind in SensitivityKind)
DEFAULT_SENSITIVITY = RECONSTRUCTED


@dataclass
class PlanResult:
    """What `make_plan` found; `to_json` is the `chipq plan --json` object."""

    plan: str
    bits: list[int]
    bytes: int
    budget: int
    ratio: float
    predicted: dict
    measured: dict | None
    paper: dict | None
    front: list[dict]
    sensitivity: sensitivity.Sensitivity
    calib_images: int
    seconds: dict
    sens_first: int = 0  # the sensitivity photos are calibration photos sens_first.. (`sensitivity_images`)
    specs: list | None = None  # each conv layer's LayerSpec (mask bits, alpha width, kept share)
    layers: list[dict] | None = None  # per conv layer: name, setting, mask_bits, alpha_bits, keep, kept, bytes

    def to_json(self) -> dict:
        sens = self.sensitivity
        return {
            "plan": self.plan,
            "bits": self.bits,
            "format_version": 2 if any(s.uses_v2 for s in self.specs or []) else 1,
            "layers": self.layers,
            "bytes": self.bytes,
            "budget": self.budget,
            "ratio": self.ratio,
            "predicted": self.predicted,
            "measured": self.measured,
            "paper_plan": self.paper,
            "front": self.front,
            "sensitivity": {
                "kind": RECONSTRUCTED if sens.weights.startswith(RECONSTRUCTED) else sens.weights,
                "method": sens.method,
                "images": sens.images,
                "first_image": self.sens_first,
                "views": sens.views,
                "cached": sens.cached,
                "seconds": sens.seconds,
                "layers": sens.layers,
                "reference_cosine": sens.ref_cosine,
                "cosine": sens.cosine,
                "sqnr_db": sens.sqnr_db,
                "v2_bits": sens.v2_bits,
                "v2": sens.v2,
            },
            "calibration_images": self.calib_images,
            "seconds": self.seconds,
        }


def thin_front(rows: list[dict], keep: int = 15, plan: str | None = None) -> list[dict]:
    """About `keep` front rows spread evenly over the list, the first, the last and `plan`'s included."""
    if len(rows) <= keep:
        return rows
    picks = {round(i * (len(rows) - 1) / (keep - 1)) for i in range(keep)}
    picks |= {i for i, row in enumerate(rows) if row["plan"] == plan}
    return [rows[i] for i in sorted(picks)]


def plot_front(result: PlanResult, path: Path, measured_front: Sequence[tuple[int, float]] = ()) -> None:
    """The front (bytes vs predicted cosine) as a PNG, the chosen plan and the paper's marked;
    `measured_front`: (bytes, measured cosine) of front plans that were compressed and measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'chipq[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = [row["bytes"] / 1e6 for row in result.front]
    ys = [row["predicted_cosine"] for row in result.front]
    ax.step(xs, ys, where="post", color="tab:blue", label="Pareto front (predicted)")
    ax.plot([result.bytes / 1e6], [result.predicted["cosine"]], "o", color="tab:green", label=f"chosen {result.plan}")
    if result.measured:
        ax.plot([result.bytes / 1e6], [result.measured["cosine"]], "s", color="tab:green", mfc="none", label="chosen, measured")
    if result.paper:
        paper_mb = result.paper["bytes"] / 1e6
        ax.plot([paper_mb], [result.paper["predicted"]["cosine"]], "^", color="tab:red", label=f"paper {PAPER_PLAN}")
        if result.paper["measured"]:
            ax.plot([paper_mb], [result.paper["measured"]["cosine"]], "^", color="tab:red", mfc="none", label="paper, measured")
    if measured_front:
        ax.plot([b / 1e6 for b, _ in measured_front], [c for _, c in measured_front], "x", color="tab:blue",
                label="front plans, measured")  # fmt: skip
    ax.axvline(result.budget / 1e6, color="grey", ls=":", label="budget")
    marked = [result.predicted["cosine"]] + [v["cosine"] for v in (result.measured,) if v]
    if result.paper:
        marked += [result.paper["predicted"]["cosine"]] + [v["cosine"] for v in (result.paper["measured"],) if v]
    ax.set_ylim(max(min(ys), min(marked) - 0.1), min(1.0, max(ys)) + 0.005)  # the 1-bit end predicts far below
    ax.set_xlabel("blob size (MB)")
    ax.set_ylabel("mean NIP descriptor cosine to float")
    ax.set_title("chipq plan: size vs fidelity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:  # PNG whatever the name says, through the one atomic writer (a link is replaced, not written through)
        atomic_write(path, lambda handle: fig.savefig(handle, format="png"), what="plot")
    finally:
        plt.close(fig)
