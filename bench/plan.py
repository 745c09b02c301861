"""`chipq plan` on the real VGG-16: the plan found at a budget against the paper's `3x7,1x6`, and
the planner's front (chip format v2: mask bits, alpha width and kept kernels per layer).

Protocol:

- calibration (activation shifts, reconstruction): the photo set shipped with chipq, as `chipq
  compress` uses it;
- sensitivity: ``--sens-images`` of those, chosen and measured as `chipq plan` does (``--sensitivity``), NIP over
  the four quarter turns;
- held out: the evaluation set of `bench/evalset.py` (``--eval``; disjoint from every calibration
  and training photo): for the float model, the chosen plan and `3x7,1x6` post-training (`chipq
  compress --no-retrain`), and with ``--retrain`` both retrained (the default `chipq compress`):
  mean NIP (224x224) descriptor cosine to float and mAP (`chipq eval --exclude-queries`);
- the front from the same sensitivity at 2, 3, 5 and 7 MB, each plan compressed post-training and
  measured the same way (the retrained v2 curve is `bench/v2_curve.py`'s).

Run: ``python bench/plan.py [--budget 3914104] [--retrain] [--queries-every N]``; writes
bench/results/plan.json and, with matplotlib, bench/results/plan_front.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common as cm


def render(result: dict) -> str:
    """The BENCHMARKS.md section (appended by `bench/run_all.py` when bench/results/plan.json exists)."""
    rows = result["rows"]
    sens = result["sensitivity"]
    fl = rows["float"]["map"]
    lines = [
        "## Plan: settings per layer under a budget (`chipq plan`)",
        "",
        f"`bench/plan.py`{' (measured ' + result['measured'] + ' UTC)' if result.get('measured') else ''}. "
        f"{result.get('sensitivity_kind', 'weight-only').capitalize()} sensitivity on calibration photos "
        f"{result.get('sensitivity_first_image', 0) + 1}-{result.get('sensitivity_first_image', 0) + result['sensitivity_images']} "
        f"of the {result['calibration_images']} (the photo set shipped "
        f"with chipq; {result['sensitivity_views']} NIP views each"
        + ("; each layer fitted on photos 1-32 as post-training compress does" if result.get("sensitivity_kind") == "reconstructed" else "")
        + "), "
        + ("read from the cache an earlier run of this script wrote" if result.get("sensitivity_cached")
           else f"measured in {result['seconds']['sensitivity']:.0f} s")
        + f". Held out: {result['heldout']}, the disjoint set of `bench/evalset.py`, never a calibration, "
        "sensitivity or training photo; NIP at 224x224, mAP as `chipq eval --exclude-queries`, cosine = mean cosine "
        "of the chip descriptor to the float one for the same image. Post-training = `chipq compress --no-retrain`; "
        "retrained = the default `chipq compress`.",
        "",
        f"Budget {result['budget']:,} B (the paper's `3x7,1x6` blob). Plans of chip format v2 (`chipq plan`'s "
        f"candidates: mask bits, and on the large layers alpha width and kept kernels; sensitivity method "
        f"{result.get('sensitivity_method', 'exact')}).",
        "",
        cm.md_table(
            ["model", "plan", "blob bytes", "fits", "predicted cos", "measured cos", "mAP", "gap to float", "mAP − paper's (95% CI)", "compress s"],
            [["float VGG-16", "", "", "", "", "1", f"{fl:.4f}", "", _versus(rows["float"], rows, "paper"), ""]]
            + [
                [label, f"`{row['plan']}`", f"{row['bytes']:,}", "yes" if row["fits_budget"] else "no",
                 f"{row['predicted_cosine']:.4f}", f"{row['cosine']:.4f}", f"{row['map']:.4f}", f"{row['map'] - fl:+.4f}",
                 _versus(row, rows, "paper, retrained" if key.endswith("retrained") else "paper"),
                 cm.fmt(row.get("compress_s"), 0)]
                for key, label, row in _labelled(rows)
            ],
            "llrlrrrrrr",
        ),
        "",
        "mAP − paper's: the row's mAP minus that of `3x7,1x6` compressed the same way, over the same queries, "
        "with a paired bootstrap 95% interval (queries resampled, `recipe_eval.paired_gap`): an interval "
        "across 0 is a difference these queries cannot tell from none.",
        "",
        "Per-layer sensitivity: mean NIP cosine to float with only that layer quantized at m bits "
        f"({'as post-training compress reconstructs it' if result.get('sensitivity_kind') == 'reconstructed' else 'weight-only α·M'}, "
        f"8-bit activations everywhere; activations alone: {sens['reference_cosine']:.4f}), and on the large "
        "layers at 1 bit with a narrower alpha (`1a5`: 5 bits) or fewer kernels (`1k40`: 40 % kept). "
        "The predicted cosine of a plan sums these losses; it ranks plans, its level is "
        + _level(rows)
        + ":",
        "",
        _sensitivity_table(sens),
    ]
    missing = [k for k in FRONT_AT if k not in result["front_at"]]
    if missing:
        smallest = f" ({result['smallest_bytes']:,} B)" if result.get("smallest_bytes") else ""
        lines += ["", f"No plan fits {', '.join(missing)}: 1 bit everywhere is larger{smallest}."]
    return "\n".join(lines)


FRONT_MB = (2, 3, 5, 7)  # the front's plans compressed and measured: the best under each size
FRONT_AT = tuple(f"{mb}MB" for mb in FRONT_MB)  # their keys in plan.json's front_at


def _sensitivity_table(sens: dict) -> str:
    """Layer x setting cosines: m = 1..5, then each v2 setting measured on some layer ("" elsewhere)."""
    v2 = sens.get("v2") or [{} for _ in sens["layers"]]
    extra = list(dict.fromkeys(text for row in v2 for text in row))
    return cm.md_table(
        ["layer"] + [f"m={m}" for m in range(1, 6)] + extra,
        [[name] + [f"{c:.4f}" for c in row] + [f"{cells[t]:.4f}" if t in cells else "" for t in extra]
         for name, row, cells in zip(sens["layers"], sens["cosine"], v2)],
        "l" + "r" * (5 + len(extra)),
    )  # fmt: skip


LABELS = {
    "chosen": "found by chipq plan, post-training",
    "paper": "paper 3x7,1x6, post-training",
    "chosen, retrained": "found by chipq plan, retrained",
    "paper, retrained": "paper 3x7,1x6, retrained",
}


def _labelled(rows: dict):
    for key, row in rows.items():
        if key == "float":
            continue
        yield key, LABELS.get(key, key.replace("front ", "front at ") + ", post-training"), row


def _level(rows: dict) -> str:
    """How the predicted cosines of the post-training rows compare with the measured ones."""
    diffs = [row["predicted_cosine"] - row["cosine"] for key, row in rows.items() if key != "float" and not key.endswith("retrained")]
    if not diffs:
        return "not checked"
    return f"off the measured post-training cosine by {min(diffs):+.3f} to {max(diffs):+.3f} (predicted − measured)"


def _versus(row: dict, rows: dict, other: str) -> str:
    """`row`'s mAP minus `rows[other]`'s with its paired bootstrap interval ("" without per-query APs)."""
    from recipe_eval import paired_gap

    base = rows.get(other)
    if row is base or not base or "ap" not in row or "ap" not in base or len(row["ap"]) != len(base["ap"]):
        return ""
    gap = paired_gap(row["ap"], base["ap"])
    return f"{gap['gap']:+.4f} ({gap['low']:+.4f}, {gap['high']:+.4f})"


def setup(model: Path, budget_text: str):
    """The float model, its conv names, blob layout, the budget in bytes, the calibration photos
    (as `chipq compress` reads them), their names and the calibrated fraction bits."""
    from chipq.data import default_photos_dir
    from chipq.importers import load_model
    from chipq.quant import allocate
    from chipq.quant.calibrate import calibration_images
    from chipq.quant.compress import calibrate

    stack = load_model(model).without_trailing_pool()
    layout = allocate.Layout.of(stack)
    calib, calib_names = calibration_images(default_photos_dir())
    names = [c.name for c in stack.conv_layers()]
    return stack, names, layout, allocate.parse_budget(budget_text, layout), calib, calib_names, calibrate(stack, calib)


def planner_default_sens() -> int:
    from chipq.reports.planner import DEFAULT_SENS_IMAGES

    return DEFAULT_SENS_IMAGES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="float model (default: the real VGG-16 in `chipq fetch-vgg16`'s cache)")
    parser.add_argument("--budget", default="3914104")
    parser.add_argument("--sens-images", type=int, default=planner_default_sens(), help="as `chipq plan --sens-images`")
    parser.add_argument("--sensitivity", default=None, help="as `chipq plan --sensitivity` (default: its default)")
    parser.add_argument("--eval", type=Path, default=None, help="held-out set of bench/evalset.py (default: built into <work>/evalset)")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK, help="where the evaluation set is built")
    parser.add_argument("--queries-every", type=int, default=1, help="every N-th edited query only (1: all)")
    parser.add_argument("--retrain", action="store_true", help="also the default (retrained) compress of both plans")
    parser.add_argument("--reuse-partial", action="store_true", help="take rows from a cut-short run's plan_partial.json")
    parser.add_argument("--skip", default="", help="comma-separated row labels not to measure (left out of the table)")
    parser.add_argument("--results", type=Path, default=cm.RESULTS_DIR)
    parser.add_argument("--replot", action="store_true", help="only redraw plan_front.png from plan.json (sensitivity cached)")
    args = parser.parse_args(argv)
    args.model = cm.resolve_model(args.model)
    args.eval = args.eval or cm.eval_set(args.work)
    cm.set_threads()
    from recipe_eval import chip_descriptors, float_descriptors, load_subset, scores

    from chipq.data import default_photos_dir
    from chipq.formats.writer import to_bytes
    from chipq.pipeline import plan as planner
    from chipq.pipeline.compress import compress
    from chipq.quant import allocate
    from chipq.quant.plan import PAPER_PLAN, parse_specs
    from chipq.reports.planner import DEFAULT_SENSITIVITY
    from chipq.retrain.trainer import load_training_images

    clock: dict[str, float] = {}
    t0 = time.perf_counter()
    stack, names, layout, budget, calib, calib_names, fracs = setup(args.model, args.budget)
    clock["load_and_calibrate"] = time.perf_counter() - t0

    def say(stage, done=None, total=None):
        count = f" {done}/{total}" if total else ""
        print(f"plan bench: {stage}{count} [{time.perf_counter() - t0:.0f}s]", file=sys.stderr, flush=True)

    kind = args.sensitivity or DEFAULT_SENSITIVITY
    if args.replot:  # the run's own sensitivity settings, from the cache
        done_run = cm.read_result(args.results, "plan")
        kind, args.sens_images = done_run["sensitivity_kind"], done_run["sensitivity_images"]
    sens = planner.measure_sensitivity(stack, calib, args.sens_images, act_fracs=fracs, status=say, kind=kind)
    sens_first = planner.sensitivity_images(calib, args.sens_images, kind)[0]
    clock["sensitivity"] = sens.seconds
    costs = sens.costs()  # every candidate `chipq plan` weighs: v2 settings included
    best, _ = allocate.best_plan(layout, costs, budget)
    front = allocate.pareto_front(layout, costs)
    chosen = allocate.plan_text(layout, best.plan)
    plans = {"chosen": list(best.plan), "paper": parse_specs(PAPER_PLAN, names)}

    if args.replot:
        _draw(done_run, layout, sens, best, front, budget, calib, clock, plans, args.results / "plan_front.png")
        return
    t1 = time.perf_counter()
    eset = load_subset(args.eval, args.queries_every)
    eval_key = f"{args.eval}:{args.queries_every}"
    assert not {Path(n).name for n in eset.names} & set(calib_names), "held-out photos overlap calibration"
    float_desc = float_descriptors(stack, eset)
    rows = {"float": {"plan": "float", **scores(eset, float_desc, float_desc, per_query=True)}}
    say(f"float on {len(eset.names)} held-out images: mAP {rows['float']['map']:.4f}")
    front_at = {}
    for mb, key in zip(FRONT_MB, FRONT_AT):
        fitting = [p for p in front if p.bytes <= mb * 10**6]
        if fitting:
            front_at[key] = list(fitting[-1].plan)
    measured = dict(plans, **{f"front {k}": v for k, v in front_at.items()})
    if args.retrain:
        measured.update({"chosen, retrained": plans["chosen"], "paper, retrained": plans["paper"]})
    train_images = load_training_images(default_photos_dir()) if args.retrain else None
    done: dict[tuple, dict] = {}
    earlier = {}
    if args.reuse_partial:  # rows a cut-short run of the same plan and budget measured
        partial = cm.read_result(args.results, "plan_partial") or {}
        if partial.get("chosen_plan") == chosen and partial.get("budget") == budget and partial.get("eval") == eval_key:
            earlier = partial["rows"]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    for label, bits in measured.items():
        key = (tuple(bits), label.endswith("retrained"))
        if key in done:  # a front plan that is also the chosen one: measured once
            rows[label] = done[key]
            continue
        if label in earlier:
            rows[label] = done[key] = earlier[label]
            continue
        if label in skip:
            continue
        t2 = time.perf_counter()
        if label.endswith("retrained"):
            model = compress(stack, bits, calib=calib, train_images=train_images).model
        else:
            model = compress(stack, bits, calib=calib, retrain=None).model
        compress_s = time.perf_counter() - t2
        size = len(to_bytes(model))
        assert size == allocate.blob_bytes(layout, bits)
        rows[label] = {
            "plan": allocate.plan_text(layout, bits),
            "bytes": size,
            "fits_budget": size <= budget,
            "predicted_cosine": sens.predict(bits)["cosine"],
            "predicted_sqnr_db": sens.predict(bits)["sqnr_db"],
            "compress_s": compress_s,
            **scores(eset, chip_descriptors(model, eset), float_desc, per_query=True),
        }
        done[key] = rows[label]
        # a run cut short keeps its rows (bench/results/plan_partial.json; the finished run writes plan.json)
        cm.write_result(args.results, "plan_partial", {"chosen_plan": chosen, "budget": budget, "eval": eval_key, "rows": rows})
        say(f"measured {label} {rows[label]['plan']}: cos {rows[label]['cosine']:.4f} mAP {rows[label]['map']:.4f}")
    clock["heldout"] = time.perf_counter() - t1
    at_sizes = {
        k: {"plan": allocate.plan_text(layout, bits), "bytes": allocate.blob_bytes(layout, bits),
            "predicted_cosine": sens.predict(bits)["cosine"]}
        for k, bits in front_at.items()
    }  # fmt: skip
    result = {
        "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": cm.machine_info(),
        "model": str(args.model),
        "budget": budget,
        "calibration_images": int(calib.shape[0]),
        "sensitivity_images": sens.images,
        "sensitivity_kind": kind,
        "sensitivity_method": sens.method,
        "sensitivity_first_image": sens_first,
        "sensitivity_views": sens.views,
        "sensitivity_cached": sens.cached,
        "heldout": f"{args.eval} ({len(eset.names)} images, {len(eset.gt)} queries"
        + (f", every {args.queries_every}th edited query" if args.queries_every > 1 else "") + ")",
        "eval_images": len(eset.names),
        "eval_queries": len(eset.gt),
        "chosen_plan": chosen,
        "rows": rows,
        "front_at": at_sizes,
        "front_points": len(front),
        "smallest_bytes": allocate.blob_bytes(layout, [1] * len(names)),
        "sensitivity": {"layers": sens.layers, "reference_cosine": sens.ref_cosine, "cosine": sens.cosine, "sqnr_db": sens.sqnr_db,
                        "v2": [{text: cells["cosine"] for text, cells in row.items()} for row in sens.v2]},
        "seconds": clock,
    }
    path = cm.write_result(args.results, "plan", result)
    (args.results / "plan_partial.json").unlink(missing_ok=True)
    print(json.dumps({k: result[k] for k in ("chosen_plan", "rows", "front_at", "seconds")}, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    _draw(result, layout, sens, best, front, budget, calib, clock, plans, args.results / "plan_front.png")


def _draw(result, layout, sens, best, front, budget, calib, clock, plans, path) -> None:
    """plan_front.png: the predicted front, the chosen and the paper's plan, the measured front plans."""
    from chipq.quant import allocate
    from chipq.quant.plan import PAPER_PLAN
    from chipq.reports import planner

    rows = result["rows"]
    try:
        res = planner.PlanResult(
            plan=allocate.plan_text(layout, best.plan), bits=best.bits, bytes=best.bytes, budget=budget,
            ratio=layout.fp32_weight_bytes() / best.bytes,
            predicted=sens.predict(list(best.plan)), measured={"cosine": rows["chosen"]["cosine"]},
            paper={"plan": PAPER_PLAN, "bytes": rows["paper"]["bytes"], "predicted": sens.predict(plans["paper"]),
                   "measured": {"cosine": rows["paper"]["cosine"]}},
            front=[{"plan": allocate.plan_text(layout, p.plan), "bytes": p.bytes,
                    "predicted_cosine": sens.predict(list(p.plan))["cosine"]} for p in front],
            sensitivity=sens, calib_images=int(calib.shape[0]), seconds=clock, specs=list(best.plan),
        )  # fmt: skip
        measured_front = [(row["bytes"], row["cosine"]) for key, row in rows.items() if key.startswith("front ")]
        planner.plot_front(res, path, measured_front)
    except Exception as exc:  # the plot is optional (matplotlib)
        print(f"no plot: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
