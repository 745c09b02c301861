"""`chipq plan`: measured per-layer sensitivity -> the best plan under a byte budget -> checked.

The steps, each in its own layer of the package:

1. calibrate the activation shifts on the calibration images (`chipq.quant.compress.calibrate`);
2. measure every (layer, width) on `sens_images` of them with NIP over the four quarter turns as
   the descriptor (`chipq.quant.sensitivity`, cached), each layer quantized as post-training
   compress makes it (`chipq.quant.reconstruct.layer_candidates`; or weight-only);
3. the exact Pareto front of blob bytes against predicted loss and its best plan under the budget
   (`chipq.quant.allocate`);
4. compress the chosen plan post-training (what `chipq compress --no-retrain` does) and measure its
   mean NIP descriptor cosine to the float model on held-out photos, which are never calibration
   or sensitivity images.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chipq.errors import UsageError
from chipq.floatnet.model import FloatStack
from chipq.formats.writer import to_bytes
from chipq.images import ImageError, load_image
from chipq.quant import FAST_RECONSTRUCT_IMAGES, allocate, sensitivity
from chipq.quant.compress import FAST_RECONSTRUCTION, calibrate, compress
from chipq.quant.plan import parse_plan
from chipq.quant.reconstruct import layer_candidates
from chipq.retrieval.describe import describe, quarter_turns
from chipq.retrieval.features import chip_features, float_features
from chipq.retrieval.pooling import nip_from_maps

PAPER_PLAN = "3x7,1x6"
POOL_NAME = "nip-quarter-turns-v1"
DEFAULT_SENS_IMAGES = 16  # two sets of 4 gave two plans (bench/plan.py, BENCHMARKS.md)
RECONSTRUCTED = "reconstructed"  # each (layer, m) as post-training compress makes it
SENSITIVITY_KINDS = (RECONSTRUCTED, sensitivity.WEIGHT_ONLY)
DEFAULT_SENSITIVITY = RECONSTRUCTED

Status = Callable[[str, int | None, int | None], None]


def nip_views(images: np.ndarray) -> np.ndarray:
    """Calibration images (N, 3, H, W) as NIP network inputs (N, 4, 3, H, W): the quarter turns.

    A non-square input keeps the upright and the half turn only (a quarter turn changes its shape).
    """
    if images.shape[2] == images.shape[3]:
        return np.stack([quarter_turns(image) for image in images])
    return np.stack([np.stack([image, np.rot90(image, 2, axes=(1, 2))]) for image in images]).copy()


def sensitivity_images(calib: np.ndarray, sens_images: int, kind: str) -> tuple[int, int]:
    """The slice ``calib[a:b]`` the sensitivity is measured on.

    Weight-only: the first `sens_images`. Reconstructed: the layers are fitted on the first
    `FAST_RECONSTRUCT_IMAGES` (as `compress` does), so the sensitivity is measured on the photos
    after them when there are enough, else (a small folder) on the first ones, in sample.
    """
    count = max(1, sens_images)
    fitted = min(FAST_RECONSTRUCT_IMAGES, len(calib))
    if kind == RECONSTRUCTED and len(calib) >= fitted + count:
        return fitted, fitted + count
    return 0, min(count, len(calib))


def measure_sensitivity(
    stack: FloatStack,
    calib: np.ndarray,
    sens_images: int = DEFAULT_SENS_IMAGES,
    *,
    act_fracs: list[int] | None = None,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    status: Status | None = None,
    kind: str = DEFAULT_SENSITIVITY,
) -> sensitivity.Sensitivity:
    """Step 2 on `sensitivity_images` of `calib` (fractions from all of them).

    `kind` reconstructed: layer L at m bits is what post-training `compress` makes of it, fitted
    on its first `FAST_RECONSTRUCT_IMAGES` calibration images with every layer before it float
    (`chipq.quant.reconstruct.layer_candidates`); weight-only: `quantize_conv` of the float weights.
    """
    if kind not in SENSITIVITY_KINDS:
        raise UsageError(f"sensitivity {kind!r}: expected one of {', '.join(SENSITIVITY_KINDS)}")
    stack = stack.without_trailing_pool()
    fracs = act_fracs if act_fracs is not None else calibrate(stack, calib)
    lo, hi = sensitivity_images(calib, sens_images, kind)
    views = nip_views(calib[lo:hi])

    def progress(done: int, total: int) -> None:
        if status:
            status("measuring layer sensitivity", done, total)

    layer_weights, name = None, sensitivity.WEIGHT_ONLY
    if kind == RECONSTRUCTED:
        fitted = np.ascontiguousarray(calib[:FAST_RECONSTRUCT_IMAGES])
        config = FAST_RECONSTRUCTION
        digest = hashlib.sha256(fitted.tobytes()).hexdigest()
        name = f"{RECONSTRUCTED}-v1:{digest}:{fitted.shape}:{config}"

        def layer_weights():
            def step(done: int, total: int) -> None:
                if status:
                    status("reconstructing each layer at each width", done, total)

            step(0, len(fracs))
            return layer_candidates(stack, fracs, fitted, sensitivity.WIDTHS, config, step)

    if status:
        status("measuring layer sensitivity", 0, len(views))
    return sensitivity.measure(
        stack, views, fracs, nip_from_maps, POOL_NAME, use_cache=use_cache, cache_dir=cache_dir, progress=progress,
        layer_weights=layer_weights, weights_name=name,
    )  # fmt: skip


def heldout_fidelity(
    stack: FloatStack, model, photos: Sequence[Path], status: Status | None = None
) -> dict:
    """Mean (and lowest) NIP descriptor cosine of the chip model to the float model on `photos`."""
    chip, ref = chip_features(model), float_features(stack)
    cosines = []
    for index, path in enumerate(photos):
        if status:
            status("measuring on held-out photos", index, len(photos))
        try:
            img = load_image(path)
        except ImageError:
            continue
        a, b = describe(img, chip), describe(img, ref)
        cosines.append(float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
    if not cosines:
        raise UsageError("no decodable held-out photo to measure the plan on")
    return {"cosine": float(np.mean(cosines)), "min_cosine": float(np.min(cosines)), "photos": len(cosines)}


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

    def to_json(self) -> dict:
        sens = self.sensitivity
        return {
            "plan": self.plan,
            "bits": self.bits,
            "bytes": self.bytes,
            "budget": self.budget,
            "ratio": self.ratio,
            "predicted": self.predicted,
            "measured": self.measured,
            "paper_plan": self.paper,
            "front": self.front,
            "sensitivity": {
                "kind": RECONSTRUCTED if sens.weights.startswith(RECONSTRUCTED) else sens.weights,
                "images": sens.images,
                "first_image": self.sens_first,
                "views": sens.views,
                "cached": sens.cached,
                "seconds": sens.seconds,
                "layers": sens.layers,
                "reference_cosine": sens.ref_cosine,
                "cosine": sens.cosine,
                "sqnr_db": sens.sqnr_db,
            },
            "calibration_images": self.calib_images,
            "seconds": self.seconds,
        }


def make_plan(
    stack: FloatStack,
    budget_text: str,
    calib: np.ndarray,
    heldout: Sequence[Path],
    *,
    sens_images: int = DEFAULT_SENS_IMAGES,
    compare_paper: bool = True,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    status: Status | None = None,
    kind: str = DEFAULT_SENSITIVITY,
) -> PlanResult:
    """Steps 1-4 (module docstring); `heldout` empty skips step 4 (``measured`` is None)."""
    stack = stack.without_trailing_pool()
    layout = allocate.Layout.of(stack)
    budget = allocate.parse_budget(budget_text, layout)
    names = [name for name, _, _ in layout.convs]
    allocate.best_plan(layout, [[0.0] * 5] * len(names), budget)  # refuse an impossible budget before measuring
    clock = {}
    started = time.perf_counter()
    if status:
        status("calibrating activations", None, None)
    fracs = calibrate(stack, calib)
    clock["calibrate"] = time.perf_counter() - started
    sens = measure_sensitivity(
        stack, calib, sens_images, act_fracs=fracs, use_cache=use_cache, cache_dir=cache_dir, status=status, kind=kind
    )
    clock["sensitivity"] = sens.seconds
    losses = [[sens.loss(i, m) for m in allocate.WIDTHS] for i in range(len(names))]
    t0 = time.perf_counter()
    best, _ = allocate.best_plan(layout, losses, budget)
    front = allocate.pareto_front(layout, losses)
    clock["allocate"] = time.perf_counter() - t0
    text = allocate.plan_text(layout, best.plan)
    assert parse_plan(text, names) == list(best.plan)
    fp32 = layout.fp32_weight_bytes()
    measured = paper = None
    if compare_paper and len(names) == 13:  # a VGG-16-sized model: the paper's plan applies
        paper_bits = parse_plan(PAPER_PLAN, names)
        paper = {
            "plan": PAPER_PLAN,
            "bytes": allocate.blob_bytes(layout, paper_bits),
            "predicted": sens.predict(paper_bits),
            "measured": None,
        }
    t0 = time.perf_counter()
    if heldout:
        if status:
            status("compressing the chosen plan", None, None)
        model = compress(stack, list(best.plan), calib).model
        size = len(to_bytes(model))
        if size != best.bytes:  # the cost model is exact; a difference is a bug, not a rounding
            raise AssertionError(f"plan {text}: predicted {best.bytes} B, the blob is {size} B")
        measured = {**heldout_fidelity(stack, model, heldout, status), "bytes": size}
        if paper is not None:
            paper_model = compress(stack, parse_plan(PAPER_PLAN, names), calib).model
            paper["measured"] = heldout_fidelity(stack, paper_model, heldout, status)
    clock["measure"] = time.perf_counter() - t0
    rows = [
        {
            "plan": allocate.plan_text(layout, point.plan),
            "bytes": point.bytes,
            "ratio": fp32 / point.bytes,
            "predicted_cosine": sens.predict(list(point.plan))["cosine"],
        }
        for point in front
    ]
    return PlanResult(
        plan=text,
        bits=list(best.plan),
        bytes=best.bytes,
        budget=budget,
        ratio=fp32 / best.bytes,
        predicted=sens.predict(list(best.plan)),
        measured=measured,
        paper=paper,
        front=rows,
        sensitivity=sens,
        calib_images=int(calib.shape[0]),
        seconds=clock,
        sens_first=sensitivity_images(calib, sens_images, kind)[0],
    )


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
    fig.savefig(path)
    plt.close(fig)
