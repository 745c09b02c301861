"""`chipq plan` on the real VGG-16: the plan found at a budget against the paper's `3x7,1x6`.

Protocol:

- calibration (activation shifts): the photo set shipped with chipq, its first 64 photos in sorted
  order (what `chipq compress` uses);
- sensitivity: the first ``--sens-images`` of those, NIP over the four quarter turns;
- held-out: UKBench-56 (/work/shared/data/ukbench56/jpg, 56 photos, 14 objects x 4 views), never
  used for calibration or sensitivity. For the float model, the chosen plan and `3x7,1x6` (both
  post-training, i.e. `chipq compress --no-retrain`): mean NIP (224x224) descriptor cosine to the
  float descriptor of the same photo, and mAP with every photo a query against the other 55
  (`chipq.retrieval.scoring.average_precision`);
- the predicted front (bytes vs predicted cosine) at 3, 4, 5 and 7 MB from the same sensitivity.

Run: ``python bench/plan.py [--sens-images 2] [--budget 3914104] [--heldout DIR] [--heldout-limit N]``;
writes bench/results/plan.json and, with matplotlib, bench/results/plan_front.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common as cm
import numpy as np


def ukbench_map(names: list[str], vectors: np.ndarray) -> float:
    """mAP on UKBench-56: each photo a query, its 3 same-object photos the positives, itself excluded."""
    from chipq.retrieval.scoring import average_precision

    groups = [int(Path(n).stem[-5:]) // 4 for n in names]
    sims = vectors @ vectors.T
    aps = []
    for q in range(len(names)):
        order = [i for i in np.argsort(-sims[q], kind="stable") if i != q]
        ranks = [r for r, i in enumerate(order) if groups[i] == groups[q]]
        aps.append(average_precision(ranks, len(ranks)))
    return float(np.mean(aps))


def len_heldout(result: dict) -> int:
    return int(result["heldout"].rsplit("(", 1)[1].split()[0])


def render(result: dict) -> str:
    """The BENCHMARKS.md section (appended by `bench/run_all.py` when bench/results/plan.json exists)."""
    rows = result["rows"]
    sens = result["sensitivity"]
    lines = [
        "## Plan: mask bits per layer under a budget (`chipq plan`)",
        "",
        f"`bench/plan.py`{' (measured ' + result['measured'] + ' UTC)' if result.get('measured') else ''}. Sensitivity on the first "
        f"{result['sensitivity_images']} of the {result['calibration_images']} calibration photos (the photo set shipped "
        f"with chipq; {result['sensitivity_views']} NIP views each), "
        + ("read from the cache an earlier run of this script wrote" if result.get("sensitivity_cached")
           else f"measured in {result['seconds']['sensitivity']:.0f} s on this (heavily shared) machine")
        + "; activation shifts calibrated on all "
        f"{result['calibration_images']}. Held out: {result['heldout']}, never calibration or sensitivity photos; "
        f"NIP at 224x224, mAP with every photo a query against the other {len_heldout(result) - 1}. Both blobs post-training "
        "(`chipq compress --no-retrain`).",
        "",
        f"Budget {result['budget']:,} B (the paper's `3x7,1x6` blob).",
        "",
        cm.md_table(
            ["model", "plan", "blob bytes", "fits", "predicted cos", "measured cos", "lowest cos", "mAP"],
            [["float", "", "", "", "", "", "", f"{rows['float']['map']:.4f}"]]
            + [
                [label, f"`{row['plan']}`", f"{row['bytes']:,}", "yes" if row["fits_budget"] else "NO",
                 f"{row['predicted_cosine']:.4f}", f"{row['cosine']:.4f}", f"{row['min_cosine']:.4f}", f"{row['map']:.4f}"]
                for label, row in (("found by chipq plan", rows["chosen"]), ("paper 3x7,1x6", rows["paper"]))
            ],
            "llrlrrrr",
        ),
        "",
        "Predicted front (same sensitivity) at the issue's sizes:",
        "",
        cm.md_table(
            ["budget", "plan", "blob bytes", "predicted cos"],
            [[k, f"`{v['plan']}`", f"{v['bytes']:,}", f"{v['predicted_cosine']:.4f}"] if (v := result["front_at"].get(k))
             else [k, "none fits (1 bit everywhere is larger)", "", ""] for k in ("3MB", "4MB", "5MB", "7MB")],
            "llrr",
        ),
        "",
        "Per-layer sensitivity: mean NIP cosine to float with only that layer quantized at m bits "
        f"(8-bit activations everywhere; activations alone: {sens['reference_cosine']:.4f}):",
        "",
        cm.md_table(
            ["layer"] + [f"m={m}" for m in range(1, 6)],
            [[name] + [f"{c:.4f}" for c in row] for name, row in zip(sens["layers"], sens["cosine"])],
            "lrrrrr",
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/work/models/vgg16.pt"))
    parser.add_argument("--budget", default="3914104")
    parser.add_argument("--sens-images", type=int, default=2)
    parser.add_argument("--heldout", type=Path, default=cm.UKBENCH / "jpg")
    parser.add_argument("--heldout-limit", type=int, help="the first N held-out photos only (sorted; UKBench: 4 per object)")
    parser.add_argument("--results", type=Path, default=cm.RESULTS_DIR)
    args = parser.parse_args(argv)
    cm.set_threads()
    from chipq.data import default_photos_dir
    from chipq.formats.writer import to_bytes
    from chipq.images import list_images, load_image
    from chipq.importers import load_model
    from chipq.quant import allocate
    from chipq.quant.compress import calibrate, calibration_images, compress
    from chipq.quant.plan import parse_plan
    from chipq.reports import planner
    from chipq.retrieval.describe import describe
    from chipq.retrieval.features import chip_features, float_features

    clock: dict[str, float] = {}
    t0 = time.perf_counter()
    stack = load_model(args.model).without_trailing_pool()
    names = [c.name for c in stack.conv_layers()]
    layout = allocate.Layout.of(stack)
    budget = allocate.parse_budget(args.budget, layout)
    calib, calib_names = calibration_images(default_photos_dir())
    heldout = list_images(args.heldout)[: args.heldout_limit]
    assert not {p.name for p in heldout} & set(calib_names), "held-out photos overlap calibration"
    fracs = calibrate(stack, calib)
    clock["load_and_calibrate"] = time.perf_counter() - t0

    def say(stage, done=None, total=None):
        print(f"plan bench: {stage} {done}/{total} [{time.perf_counter() - t0:.0f}s]", file=sys.stderr, flush=True)

    sens = planner.measure_sensitivity(stack, calib, args.sens_images, act_fracs=fracs, status=say)
    clock["sensitivity"] = sens.seconds
    losses = [[sens.loss(i, m) for m in allocate.WIDTHS] for i in range(len(names))]
    best, _ = allocate.best_plan(layout, losses, budget)
    front = allocate.pareto_front(layout, losses)
    chosen = allocate.plan_text(layout, best.plan)
    plans = {"chosen": list(best.plan), "paper": parse_plan(planner.PAPER_PLAN, names)}

    t1 = time.perf_counter()
    ref = float_features(stack)
    images = [(p.name, load_image(p)) for p in heldout]
    float_vecs = np.stack([describe(img, ref) for _, img in images])
    rows = {"float": {"plan": "float", "map": ukbench_map([n for n, _ in images], float_vecs)}}
    for label, bits in plans.items():
        model = compress(stack, bits, calib).model
        size = len(to_bytes(model))
        assert size == allocate.blob_bytes(layout, bits)
        chip = chip_features(model)
        vecs = np.stack([describe(img, chip) for _, img in images])
        cos = np.sum(vecs * float_vecs, axis=1) / np.maximum(
            np.linalg.norm(vecs, axis=1) * np.linalg.norm(float_vecs, axis=1), 1e-30
        )
        rows[label] = {
            "plan": allocate.plan_text(layout, bits),
            "bytes": size,
            "fits_budget": size <= budget,
            "predicted_cosine": sens.predict(bits)["cosine"],
            "predicted_sqnr_db": sens.predict(bits)["sqnr_db"],
            "cosine": float(cos.mean()),
            "min_cosine": float(cos.min()),
            "map": ukbench_map([n for n, _ in images], vecs),
        }
        say(f"measured {label} {rows[label]['plan']}: cos {rows[label]['cosine']:.4f} mAP {rows[label]['map']:.4f}")
    clock["heldout"] = time.perf_counter() - t1
    at_sizes = {}
    for mb in (3, 4, 5, 7):
        fitting = [p for p in front if p.bytes <= mb * 10**6]
        if fitting:
            p = fitting[-1]
            at_sizes[f"{mb}MB"] = {
                "plan": allocate.plan_text(layout, p.plan),
                "bytes": p.bytes,
                "predicted_cosine": sens.predict(list(p.plan))["cosine"],
            }
    result = {
        "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": cm.machine_info(),
        "model": str(args.model),
        "budget": budget,
        "calibration_images": int(calib.shape[0]),
        "sensitivity_images": sens.images,
        "sensitivity_views": sens.views,
        "sensitivity_cached": sens.cached,
        "heldout": f"{args.heldout} ({len(images)} photos)",
        "chosen_plan": chosen,
        "rows": rows,
        "front_at": at_sizes,
        "front_points": len(front),
        "sensitivity": {"layers": sens.layers, "reference_cosine": sens.ref_cosine, "cosine": sens.cosine, "sqnr_db": sens.sqnr_db},
        "seconds": clock,
    }
    path = cm.write_result(args.results, "plan", result)
    print(json.dumps({k: result[k] for k in ("chosen_plan", "rows", "front_at", "seconds")}, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    try:
        res = planner.PlanResult(
            plan=chosen, bits=list(best.plan), bytes=best.bytes, budget=budget, ratio=layout.fp32_weight_bytes() / best.bytes,
            predicted=sens.predict(list(best.plan)), measured={"cosine": rows["chosen"]["cosine"]},
            paper={"plan": planner.PAPER_PLAN, "bytes": rows["paper"]["bytes"], "predicted": sens.predict(plans["paper"]),
                   "measured": {"cosine": rows["paper"]["cosine"]}},
            front=[{"plan": allocate.plan_text(layout, p.plan), "bytes": p.bytes,
                    "predicted_cosine": sens.predict(list(p.plan))["cosine"]} for p in front],
            sensitivity=sens, calib_images=int(calib.shape[0]), seconds=clock,
        )  # fmt: skip
        planner.plot_front(res, args.results / "plan_front.png")
    except Exception as exc:  # the plot is optional (matplotlib)
        print(f"no plot: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
