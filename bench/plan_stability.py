"""How the plan `chipq plan` finds at a budget, and its first run's time, depend on how the sensitivity is measured.

For each sensitivity setting (probe x photos, `chipq plan --probe` and ``--sens-images``), with the
sensitivity measured afresh (its own cache folder, empty on the first run of this script):

- the wall time of the measurement (calibration excluded) and the share of the CPU other processes
  used meanwhile (`common.CpuMeter`; a time is shown only when that share was at most `CONTENTION`);
- the plan of least predicted loss at the budget (chip format v2), its predicted cosine by its own
  sensitivity and by the reference's (exact, photos 33-48: what every probe approximates);
- that plan compressed post-training (`chipq compress --no-retrain`, as the planner's check does) and
  measured on the whole held-out set of `bench/evalset.py` (never a calibration or sensitivity
  photo): mean NIP descriptor cosine to float, mAP (`chipq eval --exclude-queries`) and the paired
  bootstrap 95% interval of its mAP minus the reference's plan's (`recipe_eval.paired_gap`).

The rows name the setting; the page marks the reference and the one `chipq plan` uses by default
(the method `sensitivity.DEFAULT_PROBE` names, on 16 photos): a row of another method is not marked.

Rows are kept in bench/results/plan_stability.json as they are measured; ``--reuse`` takes the
measured fidelity of a plan already there (the sensitivity is measured again unless its cache holds it,
and a cached measurement keeps the earlier row's time).

Run: ``python bench/plan_stability.py [--budget 2000000] [--settings N] [--reuse]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import common as cm
from memory import CONTENTION  # other processes' CPU share above which a time is not shown

SETTINGS = [  # (label, probe, sensitivity photos); the first is the reference
    ("exact, photos 33-48", "exact", 16),
    ("noise gain, anchors a4 and k30", "noise-gain", 16),
    ("noise gain, one gain per layer (no anchors)", "noise-gain-single", 16),
    ("exact, photos 33-36 (--sens-images 4)", "exact", 4),
]
MARKS = (" (the default)", " (--probe noise-gain)")  # what labels of earlier runs carried: `_label` marks afresh


def probe_of(name: str):
    """The `chipq.quant.sensitivity.Probe` a setting names: a `chipq plan --probe` value, or
    "noise-gain-single" (the noise gain without its anchors)."""
    from chipq.reports.planner import SensitivityProbe

    if name == "noise-gain-single":
        return dataclasses.replace(SensitivityProbe.noise_gain.probe(), alpha_anchor=0, keep_anchor=0)
    return SensitivityProbe(name).probe()


def render(result: dict) -> str:
    """The BENCHMARKS.md section."""
    rows = result["rows"]
    reference = next(iter(rows.values()), None)
    lines = [
        "## Plan stability and the planner's first run: how the sensitivity is measured",
        "",
        f"`bench/plan_stability.py` (measured {result['measured']} UTC). Budget {result['budget']:,} B (chip format v2). "
        "Each sensitivity measured afresh (nothing cached); its time excludes loading the model and reading and "
        f"calibrating the photos ({cm.fmt(result.get('calibrate_s'), 0)} s here) and the planner's check (`chipq plan` "
        "without --no-measure: a post-training compress and the held-out photos). Every plan compressed post-training and "
        f"measured on {result['heldout']}; float mAP {result['float_map']:.4f}. \"by the reference\": the plan's "
        "predicted cosine by the exact 16-photo sensitivity. mAP − reference's: paired bootstrap 95% interval over the "
        f"queries. Times shown where other processes used at most {CONTENTION:.0%} of the CPU.",
        "",
        cm.md_table(
            ["sensitivity", "first run (s)", "plan found", "blob bytes", "predicted cos", "by the reference", "measured cos",
             "mAP", "mAP − reference's (95% CI)"],
            [
                [_label(row, row is reference), _seconds(row), f"`{row['plan']}`", f"{row['bytes']:,}", cm.fmt(row.get("predicted_cosine"), 4),
                 cm.fmt(row.get("reference_predicted"), 4), f"{row['cosine']:.4f}", f"{row['map']:.4f}", _gap(row, reference)]
                for row in rows.values()
            ],
            "lrlrrrrrr",
        ),  # fmt: skip
    ]
    return "\n".join(lines)


def _label(row: dict, reference: bool) -> str:
    """A row's setting, marked as the reference and/or as `chipq plan`'s default (the measurement
    `sensitivity.DEFAULT_PROBE` names, on 16 photos) by today's code, whatever the run that measured
    it called it."""
    from chipq.quant.sensitivity import DEFAULT_PROBE

    label = row["label"]
    for mark in MARKS:
        label = label.removesuffix(mark)
    default = (row.get("method"), row.get("photos")) == (DEFAULT_PROBE.name(), 16)
    marks = (["the reference"] if reference else []) + (["the default"] if default else [])
    return label + (f" ({', '.join(marks)})" if marks else "")


def _seconds(row: dict) -> str:
    seconds, share = row.get("seconds"), row.get("other_cpu_share")
    if seconds is None:
        return "–"
    if share is not None and share > CONTENTION:
        return "busy"
    return f"{seconds:,.0f}"


def _gap(row: dict, reference: dict | None) -> str:
    from recipe_eval import paired_gap

    if not reference or row is reference or "ap" not in row or "ap" not in reference:
        return ""
    gap = paired_gap(row["ap"], reference["ap"])
    return f"{gap['gap']:+.4f} ({gap['low']:+.4f}, {gap['high']:+.4f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="float model (default: the real VGG-16 in `chipq fetch-vgg16`'s cache)")
    parser.add_argument("--budget", default="2000000")
    parser.add_argument("--eval", type=Path, default=None, help="held-out set of bench/evalset.py (default: built into <work>/evalset)")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK, help="where the evaluation set and the sensitivity cache are kept")
    parser.add_argument("--settings", type=int, default=len(SETTINGS), help="measure the first N settings only")
    parser.add_argument("--reuse", action="store_true", help="keep the fidelity of plans plan_stability.json already has")
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

    t0 = time.perf_counter()

    def say(text, done=None, total=None):
        tail = f" {done}/{total}" if total else ""
        print(f"plan stability: {text}{tail} [{time.perf_counter() - t0:.0f}s]", file=sys.stderr, flush=True)

    started = time.perf_counter()
    stack, names, layout, budget, calib, calib_names, fracs = setup(args.model, args.budget)
    calibrate_s = time.perf_counter() - started
    eset = load_subset(args.eval, 1)
    assert not {Path(n).name for n in eset.names} & set(calib_names), "held-out photos overlap calibration"
    float_desc = float_descriptors(stack, eset)
    earlier = (cm.read_result(args.results, "plan_stability") or {}) if args.reuse else {}
    earlier_rows = earlier.get("rows", {})
    by_plan = {row["plan"]: row for row in earlier_rows.values() if "map" in row}
    cache = args.work / "plan_stability" / "cache"
    rows: dict[str, dict] = {}
    reference = None
    for label, probe_name, count in SETTINGS[: args.settings]:
        meter = cm.CpuMeter()
        sens = planner.measure_sensitivity(stack, calib, count, act_fracs=fracs, cache_dir=cache, status=say, probe=probe_of(probe_name))
        share = meter.other_share()
        reference = reference or sens
        best, _ = allocate.best_plan(layout, sens.costs(), budget)
        text = allocate.plan_text(layout, best.plan)
        row = {
            "label": label, "probe": probe_name, "method": sens.method, "photos": count, "plan": text, "bytes": best.bytes,
            "predicted_cosine": sens.predict(list(best.plan))["cosine"],
            "reference_predicted": reference.predict(list(best.plan))["cosine"],
        }  # fmt: skip
        if sens.cached:  # the time of the run that measured it, when this file has it (labels may have changed)
            before = next((r for r in earlier_rows.values() if (r.get("method"), r.get("photos")) == (sens.method, count)), {})
            row.update({"seconds": before.get("seconds"), "other_cpu_share": before.get("other_cpu_share")})
        else:
            row.update({"seconds": sens.seconds, "other_cpu_share": share})
        if text in by_plan:
            row.update({key: by_plan[text][key] for key in ("cosine", "map", "ap")})
        else:
            say(f"compressing and measuring {text}")
            model = compress(stack, list(best.plan), calib=calib, retrain=None).model
            row.update(scores(eset, chip_descriptors(model, eset), float_desc, per_query=True))
            by_plan[text] = row
        rows[label] = row
        cm.write_result(args.results, "plan_stability", {**earlier, "rows": {**earlier_rows, **rows}})
        say(f"{label}: {text} cos {row['cosine']:.4f} mAP {row['map']:.4f}")
    result = {
        "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": cm.machine_info(),
        "model": str(args.model),
        "budget": budget,
        "heldout": f"{args.eval} ({len(eset.names)} images, {len(eset.gt)} queries)",
        "float_map": scores(eset, float_desc, float_desc)["map"],
        "calibrate_s": calibrate_s,
        "rows": rows,
    }
    path = cm.write_result(args.results, "plan_stability", result)
    print(render(result))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
