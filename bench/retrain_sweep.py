"""Algorithm 1 settings against the held-out set: mAP and cosine of each retrained blob, per plan.

Run (nohup it; ~3 minutes per setting of the paper's plan, ~7 of a 2 MB v2 plan, on 2 cores):

    .venv/bin/python bench/retrain_sweep.py [--model vgg16.pt] [--eval EVALSET] [--plan PLAN] \\
        --settings '{}' '{"lr": 3e-5}' '{"map_weight": 0}' [--append]

Every row is the default route, `chipq.pipeline.compress.compress` with a `RetrainConfig` that
differs from the default only in the fields of its setting (a JSON object); ``{"steps": 0}`` is the
reconstruction start alone. Each blob is evaluated through the integer executor on the whole
evaluation set (every edited query: the mAP of `bench/recipe.py --queries-every 4` moves by ~0.006
with one query), with its paired mAP interval against float. Seconds are the compress's wall
time, stage by stage, beside its CPU time and the load average (a figure only when the load is
the run's own).

Results: bench/results/retrain_sweep.json (rows appended per setting, so a run cut short keeps
what it measured; ``--append`` keeps the rows of earlier runs, of any plan) and a table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as cm  # noqa: E402
from recipe_eval import EvalSet, chip_descriptors, float_descriptors, paired_gap, scores  # noqa: E402

from chipq.importers import load_model  # noqa: E402
from chipq.pipeline.compress import compress  # noqa: E402
from chipq.quant.calibrate import calibration_batch  # noqa: E402
from chipq.retrain.config import RetrainConfig  # noqa: E402
from chipq.retrain.trainer import load_training_images  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TRAINING_FIELDS = {f.name for f in dataclasses.fields(RetrainConfig)} - {"threads"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="float model (default: the real VGG-16 in `chipq fetch-vgg16`'s cache)")
    parser.add_argument("--train", type=Path, default=REPO / "compressor" / "data" / "photos")
    parser.add_argument("--eval", type=Path, default=None, help="held-out set of bench/evalset.py (default: built into <work>/evalset)")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK, help="where the evaluation set is built")
    parser.add_argument("--plan", default=cm.MAIN_PLAN, help="the plan every setting compresses (default: the paper's)")
    parser.add_argument("--settings", nargs="+", default=None, help="JSON objects of RetrainConfig fields (default: '{}', none with --merge)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrain_sweep.json")
    parser.add_argument("--append", action="store_true", help="add the rows to those already in --out")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="results of other runs on the same set whose rows are added (no new rows measured without --settings)")
    parser.add_argument("--note", default="", help="a note shown beside the merged rows (e.g. the code they were measured with)")
    args = parser.parse_args(argv)
    args.model = cm.resolve_model(args.model)
    args.eval = args.eval or cm.eval_set(args.work)
    log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731
    if any(other.resolve() == args.out.resolve() for other in args.merge):
        parser.error(f"--out {args.out} is one of the --merge inputs (use --append to keep its rows)")
    settings = [json.loads(s) for s in (args.settings if args.settings is not None else [] if args.merge else ["{}"])]
    for s in settings:
        if set(s) - TRAINING_FIELDS:
            parser.error(f"{s}: only training fields ({', '.join(sorted(TRAINING_FIELDS))})")
    torch.set_num_threads(2)
    stack = load_model(args.model).without_trailing_pool()
    eset = EvalSet.load(args.eval)
    log(f"{len(eset.names)} evaluation images, {len(eset.gt)} queries")
    float_desc = float_descriptors(stack, eset)
    result = {
        "model": str(args.model), "train": str(args.train), "eval": str(args.eval),
        "eval_images": len(eset.names), "queries": len(eset.gt), "cpus": os.cpu_count(),
        "float": scores(eset, float_desc, float_desc, per_query=True), "rows": [],
    }  # fmt: skip
    if args.append and args.out.is_file():  # keep an earlier run's rows
        result["rows"] = _same_set(json.loads(args.out.read_text()), result, parser, args.out)["rows"]
    for other in args.merge:  # rows measured by another run (e.g. beside this one) on the same set
        rows = _same_set(json.loads(other.read_text()), result, parser, other)["rows"]
        result["rows"] += [{**row, "run": other.name, **({"note": args.note} if args.note else {})} for row in rows]
    log(f"float mAP {result['float']['map']:.4f}")
    calib = calibration_batch(args.train)
    images = load_training_images(args.train)

    def save() -> None:
        cm.write_json(args.out, result)

    for setting in settings:
        config = dataclasses.replace(RetrainConfig(), **setting)
        load, t0, cpu0 = os.getloadavg()[0], time.monotonic(), time.process_time()
        made = compress(stack, args.plan, calib=calib, train_images=images, retrain=config)
        seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
        summary = made.result.retrain
        got = scores(eset, chip_descriptors(made.model, eset), float_desc, per_query=True)
        row = {"plan": made.plan, "setting": setting, "config": dataclasses.asdict(config), "seconds": seconds, "cpu_s": cpu,
               "reconstruct_s": summary["init_seconds"], "cache_s": summary["cache_seconds"],
               "train_s": summary["train_seconds"], "train_cosine": summary["final_cosine"], "load": load,
               "map": got["map"], "cosine": got["cosine"], "gap": got["map"] - result["float"]["map"],
               "gap_interval": paired_gap(got["ap"], result["float"]["ap"]), "ap": got["ap"]}  # fmt: skip
        result["rows"].append(row)
        save()
        log(f"{made.plan} {json.dumps(setting)}: mAP {row['map']:.4f} ({row['gap']:+.4f}) cosine {row['cosine']:.4f} "
            f"in {seconds:.0f} s (CPU {cpu:.0f} s, load {load:.1f} before)")  # fmt: skip
    save()
    print(render_markdown(result))


def _same_set(other: dict, result: dict, parser: argparse.ArgumentParser, path: Path) -> dict:
    """`other` (another run's results) when it was measured on this run's evaluation set (same
    images, same float mAP); else the parser's error."""
    if other.get("float", {}).get("map") != result["float"]["map"] or other.get("eval_images") != result["eval_images"]:
        parser.error(f"{path}: measured on another evaluation set; not adding its rows")
    return other


SHOWN = ("steps", "lr", "batch", "samples", "crop", "map_weight", "desc_weight", "desc_center", "init_images",
         "init_positions")


def _base(result: dict) -> dict:
    return dataclasses.asdict(RetrainConfig())


def _difference(config: dict, base: dict) -> str:
    """A row's settings as they differ from today's default ("default" when they do not)."""
    changed = {k: v for k, v in config.items() if k in base and base[k] != v}
    return "default" if not changed else ", ".join(f"`{k}={v}`" for k, v in changed.items())


def _interval(row: dict) -> str:
    gap = row.get("gap_interval")
    return f"{row['gap']:+.4f}" if gap is None else f"{gap['gap']:+.4f} ({gap['low']:+.3f}, {gap['high']:+.3f})"


def _seconds(row: dict) -> str:
    """The compress's wall seconds (load average before it in brackets: a figure when it is ~0)."""
    if row.get("seconds") is None:  # rows of older runs: the stages only
        return f"{row['cache_s'] + row['train_s']:.0f} + start"
    return f"{row['seconds']:.0f} (load {row['load']:.1f})"


def render_markdown(result: dict) -> str:
    """The BENCHMARKS.md tables of bench/results/retrain_sweep.json, one per plan."""
    import common as cm

    fl = result["float"]["map"]
    lines = [
        f"Algorithm 1 settings (`bench/retrain_sweep.py`): every blob made by the default route (`compress`) with one "
        f"setting changed, evaluated through the integer executor on the whole evaluation set ({result['eval_images']} images, "
        f"{result['queries']} queries); float mAP {fl:.4f}, the mAP gap with its paired 95 % interval. Each row names "
        f"what differs from today's default ({', '.join(f'{k} {v}' for k, v in _base(result).items() if k in SHOWN)}). "
        "Seconds are the compress's wall time, with the load average before it (the machine ran other jobs beside "
        "rows with a load above ~0.5).",
        "",
    ]
    plans = list(dict.fromkeys(r.get("plan", cm.MAIN_PLAN) for r in result["rows"]))
    for plan in plans:
        rows = [r for r in result["rows"] if r.get("plan", cm.MAIN_PLAN) == plan]
        notes = any(r.get("note") for r in rows)
        lines += [
            f"Plan `{plan}`:",
            "",
            cm.md_table(
                ["setting", "mAP", "gap to float (95 % CI)", "cosine", "compress s", *(["note"] if notes else [])],
                [[_difference(r["config"], _base(result)), f"{r['map']:.4f}", _interval(r), f"{r['cosine']:.4f}", _seconds(r),
                  *([r.get("note", "")] if notes else [])]
                 for r in rows],  # fmt: skip
                "lrrrr" + ("l" if notes else ""),
            ),
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
