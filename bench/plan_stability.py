"""How much the plan `chipq plan` finds at a budget depends on how the sensitivity is measured.

For each sensitivity setting (kind x which calibration photos), the plan of least predicted loss at
the budget, compressed post-training (`chipq compress --no-retrain`) and measured on the whole
held-out set of `bench/evalset.py` (never a calibration or sensitivity photo): mean NIP descriptor
cosine to float, mAP (`chipq eval --exclude-queries`) and the paired bootstrap 95% interval of its
mAP minus that of `3x7,1x6` compressed the same way (`recipe_eval.paired_gap`).

The settings: the old default (weight-only, photos 1-4), weight-only on photos 33-36,
reconstructed on photos 33-36, and the default (reconstructed, photos 33-48). Sensitivities come
from the cache `chipq plan` uses when present. Rows are kept in bench/results/plan_stability.json as
they are measured; ``--reuse`` takes the rows of a plan already measured there.

Run: ``python bench/plan_stability.py [--budget 3914104] [--reuse]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common as cm

SETTINGS = [  # (label, kind, first photo index, photos)
    ("weight-only, photos 1-4 (the default before this release)", "weight-only", 0, 4),
    ("weight-only, photos 33-36", "weight-only", 32, 4),
    ("reconstructed, photos 33-36", "reconstructed", 32, 4),
    ("reconstructed, photos 33-48 (the default)", "reconstructed", 32, 16),
]


def render(result: dict) -> str:
    """The BENCHMARKS.md section."""
    rows = result["rows"]
    paper = rows.get("paper")
    lines = [
        "## Plan stability: the found plan against how its sensitivity was measured",
        "",
        f"`bench/plan_stability.py` (measured {result['measured']} UTC). Budget {result['budget']:,} B; every plan "
        f"compressed post-training and measured on {result['heldout']}; float mAP {result['float_map']:.4f}. "
        "mAP − paper's: paired bootstrap 95% interval over the queries.",
        "",
        cm.md_table(
            ["sensitivity", "plan found", "blob bytes", "predicted cos", "measured cos", "mAP", "mAP − paper's (95% CI)"],
            [
                [row["label"], f"`{row['plan']}`", f"{row['bytes']:,}", cm.fmt(row.get("predicted_cosine"), 4),
                 f"{row['cosine']:.4f}", f"{row['map']:.4f}", _gap(row, paper)]
                for row in rows.values()
            ],
            "llrrrrr",
        ),  # fmt: skip
    ]
    return "\n".join(lines)


def _gap(row: dict, paper: dict | None) -> str:
    from recipe_eval import paired_gap

    if not paper or row is paper or "ap" not in row or "ap" not in paper:
        return ""
    gap = paired_gap(row["ap"], paper["ap"])
    return f"{gap['gap']:+.4f} ({gap['low']:+.4f}, {gap['high']:+.4f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="float model (default: the real VGG-16 in `chipq fetch-vgg16`'s cache)")
    parser.add_argument("--budget", default="3914104")
    parser.add_argument("--eval", type=Path, default=None, help="held-out set of bench/evalset.py (default: built into <work>/evalset)")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK, help="where the evaluation set is built")
    parser.add_argument("--settings", type=int, default=len(SETTINGS), help="measure the first N settings only")
    parser.add_argument("--reuse", action="store_true", help="keep rows of plans plan_stability.json already has")
    parser.add_argument("--results", type=Path, default=cm.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.model = cm.resolve_model(args.model)
    args.eval = args.eval or cm.eval_set(args.work)
    cm.set_threads()
    from plan import setup
    from recipe_eval import chip_descriptors, float_descriptors, load_subset, scores

    from chipq.pipeline import plan as planner
    from chipq.pipeline.compress import compress
    from chipq.quant import allocate
    from chipq.quant.plan import PAPER_PLAN, parse_plan

    t0 = time.perf_counter()

    def say(text, done=None, total=None):
        tail = f" {done}/{total}" if total else ""
        print(f"plan stability: {text}{tail} [{time.perf_counter() - t0:.0f}s]", file=sys.stderr, flush=True)

    stack, names, layout, budget, calib, calib_names, fracs = setup(args.model, args.budget)
    eset = load_subset(args.eval, 1)
    assert not {Path(n).name for n in eset.names} & set(calib_names), "held-out photos overlap calibration"
    float_desc = float_descriptors(stack, eset)
    earlier = (cm.read_result(args.results, "plan_stability") or {}).get("rows", {}) if args.reuse else {}
    by_plan = {row["plan"]: row for row in earlier.values()}
    plans: dict[str, tuple[str, list[int], float | None]] = {"paper": ("paper `3x7,1x6`", parse_plan(PAPER_PLAN, names), None)}
    for label, kind, first, count in SETTINGS[: args.settings]:
        if kind == "reconstructed" and first != planner.sensitivity_images(calib, count, kind)[0]:
            raise SystemExit(f"{label}: the planner no longer measures there")
        # the planner places reconstructed photos itself; weight-only ones start at the slice given
        photos = calib[first:] if kind == "weight-only" else calib
        sens = planner.measure_sensitivity(stack, photos, count, act_fracs=fracs, kind=kind, status=say)
        losses = [[sens.loss(i, m) for m in allocate.WIDTHS] for i in range(len(names))]
        best, _ = allocate.best_plan(layout, losses, budget)
        plans[label] = (label, best.bits, sens.predict(best.bits)["cosine"])
    rows: dict[str, dict] = {}
    for key, (label, bits, predicted) in plans.items():
        text = allocate.plan_text(layout, bits)
        if text in by_plan:
            rows[key] = {**by_plan[text], "label": label, "predicted_cosine": predicted}
            continue
        say(f"compressing and measuring {text}")
        model = compress(stack, bits, calib=calib, retrain=None).model
        rows[key] = {"label": label, "plan": text, "bytes": allocate.blob_bytes(layout, bits), "predicted_cosine": predicted,
                     **scores(eset, chip_descriptors(model, eset), float_desc, per_query=True)}  # fmt: skip
        by_plan[text] = rows[key]
        partial = {"rows": {**earlier, **rows}}
        cm.write_result(args.results, "plan_stability", partial)
        say(f"{label}: {text} cos {rows[key]['cosine']:.4f} mAP {rows[key]['map']:.4f}")
    result = {
        "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": cm.machine_info(),
        "model": str(args.model),
        "budget": budget,
        "heldout": f"{args.eval} ({len(eset.names)} images, {len(eset.gt)} queries)",
        "float_map": scores(eset, float_desc, float_desc)["map"],
        "rows": rows,
    }
    path = cm.write_result(args.results, "plan_stability", result)
    print(render(result))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
