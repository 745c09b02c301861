"""`plan`: measured per-layer sensitivity -> the best plan under a byte budget -> checked.

The steps (`chipq.reports.planner` renders what they find):

1. calibrate the activation shifts on the calibration images (`chipq.quant.compress.calibrate`);
2. measure every (layer, mask width) on `sens_images` of them with NIP over the four quarter turns
   as the descriptor (`chipq.quant.sensitivity`, cached), each layer quantized as post-training
   compress makes it (`chipq.quant.reconstruct.each_layer_candidates`; or weight-only), and (chip format
   v2, unless ``v2=False``) the alpha widths and kept shares of the big layers at one mask width
   (`chipq.quant.sensitivity.V2Axes`);
3. the exact Pareto front of blob bytes against predicted loss over every layer's candidate
   settings (m, alpha width, kept share) and its best plan under the budget (`chipq.quant.allocate`);
4. compress the chosen plan post-training (`chipq.pipeline.compress`, what `chipq compress
   --no-retrain` does) and measure its mean NIP descriptor cosine to the float model on held-out
   photos, which are never calibration or sensitivity images. The paper's plan (VGG-16) is
   predicted beside it, and compressed and measured the same way only on request
   (``measure_paper``: a second compress and held-out pass).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from chipq.errors import UsageError
from chipq.executor.memory import release_freed_memory
from chipq.floatnet.model import FloatStack
from chipq.formats.writer import to_bytes
from chipq.images import ImageError, list_images, load_image
from chipq.quant import FAST_RECONSTRUCT_IMAGES, allocate, sensitivity
from chipq.quant.compress import FAST_RECONSTRUCTION, calibrate
from chipq.quant.plan import PAPER_PLAN, LayerSpec, parse_plan, parse_specs
from chipq.quant.reconstruct import each_layer_candidates
from chipq.reports.planner import (
    DEFAULT_SENS_IMAGES,
    DEFAULT_SENSITIVITY,
    POOL_NAME,
    RECONSTRUCTED,
    SENSITIVITY_KINDS,
    PlanResult,
)
from chipq.retrieval.describe import ROTATIONS, describe, quarter_turns
from chipq.retrieval.features import chip_features, float_features
from chipq.retrieval.pooling import nip_from_maps

Status = Callable[[str, int | None, int | None], None]
SENSITIVITY_BATCH = 2  # calibration images per tail pass of the sensitivity (`sensitivity.measure`'s batch)


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
    axes: sensitivity.V2Axes = sensitivity.DEFAULT_V2,
    probe: sensitivity.Probe = sensitivity.DEFAULT_PROBE,
) -> sensitivity.Sensitivity:
    """Step 2 on `sensitivity_images` of `calib` (fractions from all of them).

    `kind` reconstructed: layer L at m bits is what post-training `compress` makes of it, fitted
    on its first `FAST_RECONSTRUCT_IMAGES` calibration images with every layer before it float
    (`chipq.quant.reconstruct.each_layer_candidates`); weight-only: `quantize_conv` of the float weights.
    `axes`: the v2 settings measured (`sensitivity.NO_V2`: mask widths only); reconstructed, each
    v2 setting is reconstructed too (its kernels pruned for the output and the rest refitted).
    `probe`: how each setting is measured (`sensitivity.Probe`); with the noise gain, reconstructed
    candidates skip the joint α refit but the gain run's (`each_layer_candidates`' ``refitted``).
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
        settings = sensitivity.WIDTHS + tuple(axes.settings())  # v2 settings reconstructed too (pruned for the output)
        if axes.settings():
            name += ":v2-reconstructed"
        refitted = () if probe.exact else tuple(probe.tail_runs(axes, eligible=True))
        name += "".join(f":refitted-{spec}" for spec in refitted)

        def layer_weights():
            def step(done: int, total: int) -> None:
                if status:
                    status("reconstructing each layer at each width", done, total)

            step(0, len(fracs))
            return each_layer_candidates(stack, fracs, fitted, settings, config, step, refitted)

    if status:
        status("measuring layer sensitivity", 0, len(views))
    return sensitivity.measure(
        stack, views, fracs, nip_from_maps, POOL_NAME, use_cache=use_cache, cache_dir=cache_dir, progress=progress,
        layer_weights=layer_weights, weights_name=name, axes=axes, probe=probe, batch=SENSITIVITY_BATCH,
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


def heldout_photos(image_dir: Path, calib_names: list[str], eval_dir: Path | None) -> list[Path]:
    """The photos the chosen plan is measured on: `eval_dir`'s, or the `image_dir` photos that
    calibration did not read (as many as it read).

    Raises:
        UsageError: a held-out photo is one of the calibration photos.
    """
    if eval_dir is not None:
        heldout = list_images(eval_dir)
    else:
        used = set(calib_names)
        heldout = [p for p in list_images(image_dir) if p.name not in used][: len(calib_names)]
    used_paths = {p.resolve() for p in list_images(image_dir)[: len(calib_names)]}
    overlap = [p.name for p in heldout if p.resolve() in used_paths]
    if overlap:
        raise UsageError(f"--eval shares {len(overlap)} photos with the calibration set (e.g. {overlap[0]}): give photos calibration never sees")
    return heldout


def plan(
    model: Path,
    budget: str,
    *,
    images: Path | None = None,
    eval_dir: Path | None = None,
    input_hw: tuple[int, int],
    measure: bool = True,
    sens_images: int = DEFAULT_SENS_IMAGES,
    use_cache: bool = True,
    kind: str = DEFAULT_SENSITIVITY,
    status: Status | None = None,
    v2: bool = True,
    measure_paper: bool = False,
    probe: sensitivity.Probe | None = None,
) -> tuple[PlanResult, int]:
    """`chipq plan`: load `model`, read the calibration photos, choose the heldout photos, `make_plan`.

    Returns:
        The plan and how many held-out photos it was measured on (0 without `measure`).
    """
    from chipq.importers import load_model
    from chipq.pipeline.checks import check_plan_inputs
    from chipq.quant.calibrate import calibration_images, default_calib_dir

    check_plan_inputs(model, images, eval_dir if measure else None)
    say = status or (lambda stage, done=None, total=None: None)
    image_dir = images if images is not None else default_calib_dir()
    say("loading model")
    stack = load_model(model).without_trailing_pool()
    check_memory(stack, input_hw, axes_for(v2), measure)
    say("reading calibration images")
    calib, calib_names = calibration_images(image_dir, input_hw)
    heldout = heldout_photos(image_dir, calib_names, eval_dir) if measure else []
    result = make_plan(
        stack, budget, calib, heldout, sens_images=sens_images, use_cache=use_cache, kind=kind, status=status, v2=v2,
        measure_paper=measure_paper, probe=probe,
    )  # fmt: skip
    return result, len(heldout)


def check_memory(stack: FloatStack, input_hw: tuple[int, int], axes: sensitivity.V2Axes, measure: bool) -> None:
    """Every stage of `chipq plan` fits in memory, refused before any work with what lowers the need
    (`chipq.executor.memory.check_stages`): calibration, the sensitivity (counted even when the cache
    may hold it: that is known only once the photos are read and calibrated) and the check's
    post-training compress."""
    from chipq.executor import memory as mem
    from chipq.quant import MAX_CALIB_IMAGES

    what = f"--input {input_hw[1]}x{input_hw[0]}"
    mem.check_input_size(stack.layers, input_hw, what)
    weights = sum(conv.weight.size + conv.bias.size for conv in stack.conv_layers())
    fixed = 2 * weights * 4 + MAX_CALIB_IMAGES * 3 * input_hw[0] * input_hw[1]  # the float and fitted weights; the images
    positions = FAST_RECONSTRUCTION.positions
    stages = [
        ("calibration", mem.calibration_bytes(stack.layers, input_hw), what, "use a smaller input size"),
        sensitivity_stage(stack, input_hw, axes, "or --v1 (fewer settings measured)"),
    ]
    if measure:
        stages.append(("the check's compress", mem.reconstruction_bytes(stack.layers, input_hw, positions), what, "use --no-measure"))
    mem.check_stages(stages, fixed)


def sensitivity_stage(stack: FloatStack, input_hw: tuple[int, int], axes: sensitivity.V2Axes, fewer: str) -> tuple:
    """The layer sensitivity's stage for `chipq.executor.memory.check_stages` (`measure_sensitivity`
    with `axes` at `input_hw`); `fewer`: the option that measures fewer settings, said when there
    are v2 settings."""
    from chipq.executor import memory as mem

    settings = len(sensitivity.WIDTHS) + len(axes.settings())
    need = mem.sensitivity_bytes(stack.layers, input_hw, FAST_RECONSTRUCTION.positions, settings, SENSITIVITY_BATCH * len(ROTATIONS))
    lower = "use a smaller input size" + (f" {fewer}" if axes.settings() else "")
    return ("the layer sensitivity", need, f"--input {input_hw[1]}x{input_hw[0]}", lower)


def axes_for(v2: bool) -> sensitivity.V2Axes:
    """The v2 settings the planner measures and chooses from (`v2=False`: chip format v1 only)."""
    return sensitivity.DEFAULT_V2 if v2 else sensitivity.NO_V2


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
    v2: bool = True,
    axes: sensitivity.V2Axes | None = None,
    measure_paper: bool = False,
    probe: sensitivity.Probe | None = None,
) -> PlanResult:
    """Steps 1-4 (module docstring); `heldout` empty skips step 4 (``measured`` is None).

    `compare_paper`: the paper's plan predicted beside the chosen one (VGG-16-sized models);
    `measure_paper`: and compressed and measured on `heldout` too.

    `v2`: choose alpha widths and kept shares too (chip format v2); False: mask widths only (v1).
    `axes`: the v2 settings measured (default `axes_for(v2)`).
    `probe`: how the sensitivity measures each setting (`measure_sensitivity`; None: its default).
    """
    stack = stack.without_trailing_pool()
    axes = axes if axes is not None else axes_for(v2)
    layout = allocate.Layout.of(stack)
    budget = allocate.parse_budget(budget_text, layout)
    names = [name for name, _, _ in layout.convs]
    kernels = [layout.kernels(i) for i in range(len(names))]
    # refuse an impossible budget before measuring (the candidate settings are known already)
    allocate.best_plan(layout, [dict.fromkeys(row, 0.0) for row in axes.candidates(kernels)], budget)
    clock = {}
    started = time.perf_counter()
    if status:
        status("calibrating activations", None, None)
    fracs = calibrate(stack, calib)
    clock["calibrate"] = time.perf_counter() - started
    sens = measure_sensitivity(
        stack, calib, sens_images, act_fracs=fracs, use_cache=use_cache, cache_dir=cache_dir, status=status, kind=kind,
        axes=axes, probe=probe or sensitivity.DEFAULT_PROBE,
    )  # fmt: skip
    clock["sensitivity"] = sens.seconds
    # the sensitivity's freed maps stay resident under the heavy commands' allocator settings: the
    # check's compress started on top of them at 2.1 GB (VGG-16); given back, it peaks at 1.3 GB
    release_freed_memory()
    costs = sens.costs(v2=bool(axes.settings()))
    t0 = time.perf_counter()
    best, _ = allocate.best_plan(layout, costs, budget)
    front = allocate.pareto_front(layout, costs)
    clock["allocate"] = time.perf_counter() - t0
    text = allocate.plan_text(layout, best.plan)
    assert parse_specs(text, names) == list(best.plan)
    paper = _paper_row(layout, names, sens) if compare_paper and len(names) == 13 else None  # VGG-16-sized
    t0 = time.perf_counter()
    measured_paper = paper if measure_paper else None
    measured = _measure(stack, calib, heldout, text, best, measured_paper, names, status) if heldout else None
    clock["measure"] = time.perf_counter() - t0
    return PlanResult(
        plan=text,
        bits=best.bits,
        bytes=best.bytes,
        budget=budget,
        ratio=layout.fp32_weight_bytes() / best.bytes,
        predicted=sens.predict(list(best.plan)),
        measured=measured,
        paper=paper,
        front=_front_rows(layout, front, sens),
        sensitivity=sens,
        calib_images=int(calib.shape[0]),
        seconds=clock,
        sens_first=sensitivity_images(calib, sens_images, kind)[0],
        specs=list(best.plan),
        layers=layer_rows(layout, list(best.plan)),
    )


def layer_rows(layout: allocate.Layout, plan: Sequence[LayerSpec]) -> list[dict]:
    """Per conv layer of a plan: its setting, the kernels it stores and its payload bytes."""
    rows = []
    for index, ((name, out_ch, in_ch), spec) in enumerate(zip(layout.convs, plan)):
        stored = allocate.stored_kernels(spec, out_ch * in_ch)
        rows.append({
            "name": name, "setting": str(spec), "mask_bits": spec.bits, "alpha_bits": spec.alpha_bits,
            "keep": spec.keep, "kernels": out_ch * in_ch, "kept": out_ch * in_ch if stored is None else stored,
            "bytes": layout.payload(index, spec),
        })  # fmt: skip
    return rows


def _paper_row(layout: allocate.Layout, names: list[str], sens: sensitivity.Sensitivity) -> dict:
    """The paper's plan beside the chosen one (its ``measured`` filled by `_measure`)."""
    paper_bits = parse_plan(PAPER_PLAN, names)
    return {
        "plan": PAPER_PLAN,
        "bytes": allocate.blob_bytes(layout, paper_bits),
        "predicted": sens.predict(paper_bits),
        "measured": None,
    }


def _measure(stack, calib, heldout, text, best, paper, names, status) -> dict:
    """Step 4: the chosen plan (and the paper's, into `paper`) compressed post-training, measured."""
    from chipq.pipeline.compress import compress

    if status:
        status("compressing the chosen plan", None, None)
    model = compress(stack, list(best.plan), calib=calib, retrain=None).model
    size = len(to_bytes(model))
    if size != best.bytes:  # the cost model is exact; a difference is a bug, not a rounding
        raise AssertionError(f"plan {text}: predicted {best.bytes} B, the blob is {size} B")
    measured = {**heldout_fidelity(stack, model, heldout, status), "bytes": size}
    if paper is not None:
        paper_model = compress(stack, parse_plan(PAPER_PLAN, names), calib=calib, retrain=None).model
        paper["measured"] = heldout_fidelity(stack, paper_model, heldout, status)
    return measured


def _front_rows(layout: allocate.Layout, front, sens: sensitivity.Sensitivity) -> list[dict]:
    fp32 = layout.fp32_weight_bytes()
    return [
        {
            "plan": allocate.plan_text(layout, point.plan),
            "bytes": point.bytes,
            "ratio": fp32 / point.bytes,
            "predicted_cosine": sens.predict(list(point.plan))["cosine"],
        }
        for point in front
    ]
