"""The compress recipe on the real VGG-16 `3x7,1x6`: cosine and mAP vs minutes, and the loss budget.

Run (nohup it; tens of minutes on the 2-core machine):

    .venv/bin/python bench/recipe.py [--model vgg16.pt] [--train PHOTOS] [--eval EVALSET]

Training and calibration images: --train (default the shipped photo set); evaluation: --eval, a
set disjoint from them (`bench/evalset.py`), every image described by NIP at 224x224 (four
rotations), mAP as `chipq eval --exclude-queries`, cosine = mean cosine of the chip's descriptor to
the float model's for the same image. Rows:

- float VGG-16; post-training weight-only (`quantize_stack`, the old default); post-training
  reconstructed (`chipq.quant.reconstruct`, the `--no-retrain` route); the retrained blob.
- ablation: the post-training loss of each part alone, the rest float (8-bit activations only,
  3-bit layers only, 1-bit layers only), and of the 1-bit layers after reconstruction.
- curve: the retraining run (started from the reconstruction) evaluated at a few points, minutes
  counted from the start of compression (calibration, reconstruction, caching, steps; evaluation
  excluded). Curve points use the QAT forward (the chip's arithmetic in float32) on every
  --curve-every-th evaluation image (cosine only); the final row runs the blob through the integer
  executor on the whole set. After the default's --steps the same training goes on to --longer
  steps (default 120) and that blob is scored too: bench/results/recipe_longer.json.

The machine is shared: the JSON records the load average and the process CPU seconds of each stage
beside the wall time.

Results: bench/results/recipe.json, recipe_longer.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as cm  # noqa: E402
from recipe_eval import chip_descriptors, descriptors, float_descriptors, load_subset, paired_gap, scores, simulate  # noqa: E402

from chipq.data import default_photos_dir  # noqa: E402
from chipq.executor.fast import FastExecutor  # noqa: E402
from chipq.formats.writer import write_blob  # noqa: E402
from chipq.importers import load_model  # noqa: E402
from chipq.pipeline.compress import compress  # noqa: E402
from chipq.quant.calibrate import calibration_batch  # noqa: E402
from chipq.quant.compress import calibrate  # noqa: E402
from chipq.quant.quantize import quantize_stack  # noqa: E402
from chipq.quant.reconstruct import reconstruct  # noqa: E402
from chipq.retrain.config import RetrainConfig
from chipq.retrain.pipeline import reconstruct_config  # noqa: E402
from chipq.retrain.trainer import Retrainer, load_training_images, torch_settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PLAN = [3] * 7 + [1] * 6


class Clock:
    """Wall and process CPU seconds per named stage."""

    def __init__(self) -> None:
        self.stages: dict[str, dict] = {}

    def run(self, name, fn, *args, **kwargs):
        wall, cpu = time.monotonic(), time.process_time()
        out = fn(*args, **kwargs)
        self.stages[name] = {"wall_s": time.monotonic() - wall, "cpu_s": time.process_time() - cpu, "load": os.getloadavg()[0]}
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="float model (default: the real VGG-16 in `chipq fetch-vgg16`'s cache)")
    parser.add_argument("--train", type=Path, default=None, help="training photos (default: the shipped set)")
    parser.add_argument("--eval", type=Path, default=None, help="held-out set of bench/evalset.py (default: built into $CHIPQ_BENCH_WORK/evalset)")
    parser.add_argument("--steps", type=int, default=RetrainConfig.steps)
    parser.add_argument("--points", default="0,10,20,40,60,80,100,120", help="curve points, steps")
    parser.add_argument("--longer", type=int, default=120,
                        help="after scoring the blob of --steps, train on to this many steps and score that blob too "
                             "(written to --longer-out; 0: stop at --steps)")  # fmt: skip
    parser.add_argument("--longer-out", type=Path, default=REPO / "bench" / "results" / "recipe_longer.json")
    parser.add_argument("--curve-every", type=int, default=4, help="curve points use every N-th eval image")
    parser.add_argument("--crop", type=int, default=RetrainConfig.crop)
    parser.add_argument("--batch", type=int, default=RetrainConfig.batch)
    parser.add_argument("--samples", type=int, default=RetrainConfig.samples)
    parser.add_argument("--lr", type=float, default=RetrainConfig.lr)
    parser.add_argument("--train-from", default="")
    parser.add_argument("--queries-every", type=int, default=1, help="keep every N-th edited query (1: all)")
    parser.add_argument("--skip-ablation", action="store_true")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK / "recipe")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recipe.json")
    args = parser.parse_args(argv)
    args.model = cm.resolve_model(args.model)
    args.train = args.train or default_photos_dir()
    args.eval = args.eval or cm.eval_set(cm.DEFAULT_WORK)  # shared with the other benches, not in --work
    args.work.mkdir(parents=True, exist_ok=True)
    log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731
    torch.set_num_threads(2)
    clock = Clock()
    result: dict = {"model": str(args.model), "plan": cm.MAIN_PLAN, "train": str(args.train), "eval": str(args.eval),
                    "load_at_start": os.getloadavg(), "cpus": os.cpu_count()}  # fmt: skip

    stack = load_model(args.model).without_trailing_pool()
    eset = load_subset(args.eval, args.queries_every)
    result["queries_every"] = args.queries_every
    small = eset.every(args.curve_every)
    log(f"{len(eset.names)} evaluation images ({len(eset.gt)} queries), curve on {len(small.names)}")
    float_desc = float_descriptors(stack, eset)
    float_small = float_desc[:: args.curve_every]
    score = lambda desc: scores(eset, desc, float_desc, per_query=True)  # noqa: E731  (each query's AP kept: paired gaps)
    rows = {"float": score(float_desc)}
    log(f"float mAP {rows['float']['map']}")

    # --- compress as the default route does it, stage by stage --------------------------------
    config = RetrainConfig(steps=args.steps, batch=args.batch, crop=args.crop, samples=args.samples, lr=args.lr,
                           train_from=args.train_from)  # fmt: skip
    calib = clock.run("read_calibration", calibration_batch, args.train)
    # the --no-retrain route, as `chipq compress --no-retrain` runs it (timed on its own)
    wall = time.monotonic()
    fast = compress(stack, PLAN, calib=calib, retrain=None).model
    result["no_retrain_seconds"] = time.monotonic() - wall
    rows["post_training"] = score(chip_descriptors(fast, eset))
    log(f"post-training (--no-retrain) {_shown(rows['post_training'])} in {result['no_retrain_seconds']:.0f} s")
    fracs = calibrate(stack, calib)  # float calibration: the weight-only rows and the ablation
    weight_only, _ = quantize_stack(stack, PLAN, fracs)
    rows["post_training_weight_only"] = score(chip_descriptors(weight_only, eset))
    log(f"post-training weight-only {_shown(rows['post_training_weight_only'])}")
    # where the default route's training starts: the full reconstruction
    rstack, rfracs, stats = clock.run(
        "reconstruct", reconstruct, stack, PLAN, None, calib[: config.init_images], reconstruct_config(config)
    )
    result["reconstruct_layers"] = [{**vars(s), "bits": str(s.bits)} for s in stats]  # a v2 setting as its plan text
    rebuilt, _ = quantize_stack(rstack, PLAN, rfracs)
    rows["retraining_start"] = score(chip_descriptors(rebuilt, eset))
    log(f"full reconstruction (retraining start) {_shown(rows['retraining_start'])}")

    if not args.skip_ablation:
        convs = [c.name for c in stack.conv_layers()]
        parts = {"8-bit activations only": (stack, fracs, set(), True), "3-bit layers only": (stack, fracs, set(convs[:7]), False),
                 "1-bit layers only": (stack, fracs, set(convs[7:]), False),
                 "1-bit layers only, reconstructed": (_mix(stack, rstack, convs[7:]), fracs, set(convs[7:]), False),
                 "3-bit layers only, reconstructed": (_mix(stack, rstack, convs[:7]), fracs, set(convs[:7]), False)}  # fmt: skip
        result["ablation"] = {}
        for label, (s, f, quant, acts) in parts.items():
            maps = simulate(s, PLAN, f, small.pixels, quant, acts)
            result["ablation"][label] = scores(small, descriptors(maps), float_small)["cosine"]
            log(f"ablation {label}: cosine {result['ablation'][label]:.4f}")

    # --- retraining from the reconstruction ----------------------------------------------------
    # One run makes both results: the blob of --steps is scored, then training goes on to --longer.
    # The same as a separate --steps LONGER run for this v1 plan: the learning rate is constant and
    # a step's batch depends only on the seed and the step (`Retrainer.batch_indices`).
    last = max(args.steps, args.longer)
    points = sorted({int(p) for p in args.points.split(",") if int(p) <= last} | {args.steps, last})
    curve = []
    with torch_settings(config.threads):
        trainer = Retrainer(stack, PLAN, rfracs, config, (224, 224), init=rstack)
        prefix_out = None
        if trainer.split:
            prefix_out = torch.from_numpy(FastExecutor(trainer.prefix).run(small.pixels)).float()
            prefix_out *= 2.0 ** -trainer.prefix.activation_fracs()[-1]
        images = clock.run("read_training", load_training_images, args.train)
        clock.run("cache", trainer.build_cache, images)
        done_s = sum(v["wall_s"] for v in clock.stages.values())
        train_wall = train_cpu = 0.0
        while True:
            if trainer.step in points:
                with torch.no_grad():
                    maps = torch.cat([trainer.net(prefix_out[i : i + 16]) for i in range(0, len(prefix_out), 16)])
                row = {"step": trainer.step, "minutes": (done_s + train_wall) / 60, "train_cpu_s": train_cpu, "load": os.getloadavg()[0],
                       **scores(small, descriptors(maps.numpy()), float_small)}  # fmt: skip
                curve.append(row)
                log(f"curve {row}")
            if trainer.step == args.steps:  # the default's blob (its scoring is not counted in the minutes)
                clock.stages["train"] = {"wall_s": train_wall, "cpu_s": train_cpu, "load": os.getloadavg()[0]}
                final, _ = trainer.chip_model()
                write_blob(final, args.work / "retrained.blob")
                rows["retrained"] = score(chip_descriptors(final, eset))
                log(f"retrained {_shown(rows['retrained'])}")
                result.update(
                    config=dict(vars(config)), rows=rows, curve=list(curve), stages=dict(clock.stages),
                    compress_seconds=sum(v["wall_s"] for v in clock.stages.values()),
                    seconds_per_step=train_wall / max(1, args.steps), cpu_seconds_per_step=train_cpu / max(1, args.steps),
                    load_at_end=os.getloadavg(),
                )  # fmt: skip
                cm.write_json(args.out, result)
                render(result)
            if trainer.step >= last:
                break
            wall, cpu = time.monotonic(), time.process_time()
            trainer.train_step()
            train_wall += time.monotonic() - wall
            train_cpu += time.process_time() - cpu
        if last > args.steps:
            final, _ = trainer.chip_model()
    if last > args.steps:
        write_blob(final, args.work / "retrained_longer.blob")
        stages = {**clock.stages, "train": {"wall_s": train_wall, "cpu_s": train_cpu, "load": os.getloadavg()[0]}}
        longer = {"continued_from": args.out.name, "config": {**vars(config), "steps": last}, "curve": curve, "stages": stages,
                  "rows": {"float": rows["float"], "retrained": score(chip_descriptors(final, eset))},
                  "compress_seconds": sum(v["wall_s"] for v in stages.values()),
                  "seconds_per_step": train_wall / last, "load_at_end": os.getloadavg()}  # fmt: skip
        log(f"retrained, {last} steps {_shown(longer['rows']['retrained'])}")
        cm.write_json(args.longer_out, longer)


def _shown(row: dict) -> dict:
    """A row for the log: without its per-query APs."""
    return {k: v for k, v in row.items() if k != "ap"}


def _gap(row: dict, base: dict) -> str:
    """mAP of `row` minus `base`'s, with the paired 95% interval when both kept each query's AP."""
    if "ap" in row and "ap" in base:
        g = paired_gap(row["ap"], base["ap"])
        return f"{g['gap']:+.4f} ({g['low']:+.4f}, {g['high']:+.4f})"
    return f"{row['map'] - base['map']:+.4f}"


def _mix(stack, rebuilt, names):
    """`stack` with the layers `names` taken from `rebuilt`."""
    from chipq.floatnet.model import FloatStack

    chosen = {layer.name: layer for layer in rebuilt.layers}
    layers = [chosen[layer.name] if layer.name in names else layer for layer in stack.layers]
    return FloatStack(layers, stack.mean, stack.std, stack.source)


def render(result: dict) -> None:
    print("\nmodel | mAP | gap to float | cosine")
    fl = result["rows"]["float"]["map"]
    for name, row in result["rows"].items():
        print(f"{name} | {row['map']:.4f} | {row['map'] - fl:+.4f} | {row['cosine']:.4f}")
    print("\nstep | minutes | cosine (curve subset)")
    for row in result["curve"]:
        print(f"{row['step']} | {row['minutes']:.1f} | {row['cosine']:.4f}")
    for label, cos in result.get("ablation", {}).items():
        print(f"ablation | {label} | {cos:.4f}")
    print(f"stages: {json.dumps(result['stages'])}")


if __name__ == "__main__":
    sys.exit(main())


def plot_curve(result: dict, longer: dict | None, path: Path, sweep: dict | None = None) -> bool:
    """Cosine (curve points) and the blobs' cosine and mAP gap against minutes; False without matplotlib.

    `sweep`: bench/results/retrain_sweep.json, whose rows (the whole evaluation set, today's
    reconstruction settings only) are drawn as their own series."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_cos, ax_map) = plt.subplots(1, 2, figsize=(10, 4))
    steps = result["config"]["steps"]
    continued = [p for p in (longer or {}).get("curve", []) if p["step"] >= steps]
    for label, curve, style in (("this run", result.get("curve", []), "o-"), ("continued", continued, "s--")):
        if curve:
            ax_cos.plot([p["minutes"] for p in curve], [p["cosine"] for p in curve], style, label=f"{label} (training net)")
    rows, fl = result["rows"], result["rows"]["float"]["map"]
    stages = result.get("stages", {})
    start = sum(stages[k]["wall_s"] for k in ("read_calibration", "reconstruct") if k in stages) / 60
    points = [("--no-retrain", result.get("no_retrain_seconds", 0) / 60, rows.get("post_training")),
              ("reconstruction", start, rows.get("retraining_start")),
              (f"default ({result['config']['steps']} steps)", result.get("compress_seconds", 0) / 60, rows.get("retrained"))]  # fmt: skip
    if longer and "retrained" in longer.get("rows", {}):
        points.append((f"{longer['config']['steps']} steps", longer["compress_seconds"] / 60, longer["rows"]["retrained"]))
    first = True
    for label, minutes, row in points:
        if row:
            ax_cos.plot(minutes, row["cosine"], "k^", label="blobs (integer executor, whole set)" if first else None)
            first = False
            ax_cos.annotate(label, (minutes, row["cosine"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
            ax_map.plot(minutes, row["map"] - fl, "k^")
            ax_map.annotate(label, (minutes, row["map"] - fl), textcoords="offset points", xytext=(4, 4), fontsize=8)
    today = vars(RetrainConfig())
    rows_now = [r for r in (sweep or {}).get("rows", []) if all(r["config"].get(k) == today[k] for k in ("init_images", "init_positions"))
                and r.get("plan", cm.MAIN_PLAN) == cm.MAIN_PLAN
                and r.get("reconstruct_s") is not None]  # fmt: skip
    rows_now.sort(key=lambda r: r["config"]["steps"])
    if rows_now:  # (the sweep may hold other plans' rows only)
        minutes = [(r["reconstruct_s"] + r["cache_s"] + r["train_s"]) / 60 for r in rows_now]
        labels = [f"{r['config']['steps']} steps" for r in rows_now]
        ax_cos.plot(minutes, [r["cosine"] for r in rows_now], "D-", color="tab:green", label="whole set, today's start")
        ax_map.plot(minutes, [r["gap"] for r in rows_now], "D-", color="tab:green", label="whole set, today's start")
        for m, r, label in zip(minutes, rows_now, labels):
            ax_map.annotate(label, (m, r["gap"]), textcoords="offset points", xytext=(4, 4), fontsize=8, color="tab:green")
        ax_map.legend(fontsize=8, loc="lower left")
    ax_cos.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax_map.axhline(-0.005, color="grey", lw=0.8, ls=":")
    ax_map.axhline(0, color="black", lw=0.5)
    ax_cos.set(xlabel="minutes of compress (2 cores)", ylabel="mean descriptor cosine to float", title="cosine")
    ax_map.set(xlabel="minutes of compress (2 cores)", ylabel="mAP − float mAP", title="mAP gap (held-out set)")
    ax_cos.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


ROW_LABELS = {
    "float": "float VGG-16",
    "post_training_weight_only": "post-training, weight-only (release 0.1 default)",
    "post_training": "`compress --no-retrain` (fast reconstruction)",
    "post_training_reconstructed": "full reconstruction (where retraining starts)",
    "retraining_start": "full reconstruction (where retraining starts)",
    "retrained": "`compress` default (reconstruction + Algorithm 1)",
}


def render_markdown(result: dict, longer: dict | None = None, sweep: dict | None = None) -> str:
    """The BENCHMARKS.md section (appended by `bench/run_all.py` when bench/results/recipe.json exists).

    `longer`: the same run's training continued to more steps (its later curve points and blob are shown too); `sweep`:
    bench/results/reconstruct_sweep.json.
    """
    import common as cm

    rows = result["rows"]
    queries_every = result.get("queries_every", 1)
    lines = [
        "## The default compress: fidelity vs minutes (`bench/recipe.py`)",
        "",
        f"Real VGG-16, plan `3x7,1x6`, trained and calibrated on the photo set shipped with chipq; evaluated on the "
        f"disjoint evaluation set of `bench/evalset.py` ({'every ' + str(queries_every) + 'th edited query, ' if queries_every > 1 else ''}"
        "every database photo; NIP at 224x224, four rotations; mAP as `chipq eval --exclude-queries`; cosine = mean cosine of "
        "the chip's descriptor to the float model's for the same image). Descriptors of the blobs come from the integer "
        f"executor. {result.get('cpus', 2)} cores, load average {result['load_at_start'][0]:.1f} at the start.",
        "",
        cm.md_table(
            ["model", "mAP", "gap to float (95% CI)", "descriptor cosine"],
            [[ROW_LABELS.get(k, k), f"{r['map']:.4f}", "" if k == "float" else _gap(r, rows["float"]), f"{r['cosine']:.4f}"]
             for k, r in rows.items()],  # fmt: skip
            "lrrr",
        ),
        "",
    ]
    if "ap" in rows.get("retrained", {}) and "ap" in rows.get("retraining_start", {}):
        lines += [
            "Gaps: mAP difference over the same queries with a paired bootstrap 95% interval (queries resampled). "
            f"Algorithm 1 against the reconstruction it starts from: mAP {_gap(rows['retrained'], rows['retraining_start'])}, "
            f"cosine {rows['retraining_start']['cosine']:.4f} → {rows['retrained']['cosine']:.4f}.",
            "",
        ]
    config, today = result.get("config", {}), vars(RetrainConfig())
    stale = {k: v for k, v in config.items() if k in today and today[k] != v}
    if stale:
        lines += [
            "This run used " + ", ".join(f"{k} {v}" for k, v in stale.items()) + " where today's default is "
            + ", ".join(f"{k} {today[k]}" for k in stale) + ": its `compress` default row is that older default "
            "(today's is measured on the whole set by `bench/retrain_sweep.py`, below).",
            "",
        ]
    if "no_retrain_seconds" in result:
        lines += [f"`--no-retrain` route (`chipq.pipeline.compress`, as the CLI calls it): "
                  f"{result['no_retrain_seconds']:.0f} s wall.", ""]
    stages = result.get("stages", {})
    product = [k for k in ("read_calibration", "reconstruct", "read_training", "cache", "train") if k in stages]
    if product:
        total = sum(stages[k]["wall_s"] for k in product)
        lines += [
            "Default route, stage by stage (wall / CPU seconds): "
            + ", ".join(f"{k} {stages[k]['wall_s']:.0f} / {stages[k]['cpu_s']:.0f}" for k in product)
            + f"; total {total / 60:.1f} min for {result['config']['steps']} steps "
            f"({result['seconds_per_step']:.2f} s a step).",
            "",
        ]
    curve_rows = [["this run", p["step"], f"{p['minutes']:.1f}", f"{p['cosine']:.4f}"] for p in result.get("curve", [])]
    if longer:  # the same training continued (its points up to this run's steps are this run's)
        curve_rows += [["continued", p["step"], f"{p['minutes']:.1f}", f"{p['cosine']:.4f}"]
                       for p in longer.get("curve", []) if p["step"] > result["config"]["steps"]]  # fmt: skip
    if curve_rows:
        lines += [
            "Curve (retraining from the full reconstruction; minutes from the start of compression, evaluations "
            "excluded; cosine on every 4th evaluation image through the training network's forward, the chip's "
            "arithmetic in float32):",
            "",
            cm.md_table(["run", "step", "minutes", "cosine"], curve_rows, "lrrr"),
            "",
        ]
        if longer and "rows" in longer and "retrained" in longer["rows"]:
            r = longer["rows"]["retrained"]
            lines += [
                f"The same training continued (`bench/results/recipe_longer.json`), its blob after {longer['config']['steps']} steps: mAP {r['map']:.4f} "
                f"({_gap(r, longer['rows']['float'])} to float), cosine {r['cosine']:.4f}.",
                "",
            ]
    if result.get("ablation"):
        lines += [
            "Where the loss comes from (each part quantized alone, the rest float; cosine on every 4th evaluation image):",
            "",
            cm.md_table(["quantized part", "cosine"], [[k, f"{v:.4f}"] for k, v in result["ablation"].items()], "lr"),
            "",
        ]
    if sweep:
        lines += [
            f"Reconstruction settings (`bench/reconstruct_sweep.py`, cosine on {sweep['eval_images']} evaluation images, "
            "no training; the cosines are deterministic, the wall seconds depend on the load average beside them, "
            "2 = the machine's two cores busy with this alone):",
            "",
            cm.md_table(
                ["setting", "images", "wall s", "load", "cosine"],
                [[f"`{json.dumps(r['setting'])}`", r["images"], f"{r['wall_s']:.0f}", f"{r['load']:.1f}", f"{r['cosine']:.4f}"]
                 for r in sweep["rows"]],  # fmt: skip
                "lrrrr",
            ),
            "",
        ]
    return "\n".join(lines)
