"""Algorithm 1 settings against the held-out set: mAP and cosine of each retrained blob.

Run (nohup it; ~5 minutes per setting on the 2-core machine):

    .venv/bin/python bench/retrain_sweep.py [--model vgg16.pt] [--eval EVALSET] \\
        --settings '{}' '{"lr": 3e-5}' '{"map_weight": 0}'

Every setting starts from the full reconstruction (the default route's start; made once per
`init_images`/`init_positions`) and changes only `RetrainConfig` fields (JSON objects, the default config's values otherwise); settings
with the same samples share one cache (its seconds are repeated in their rows). Each
blob is evaluated through the integer executor on the whole evaluation set (every edited query:
the mAP of `bench/recipe.py --queries-every 4` moves by ~0.006 with one query); the
reconstruction itself is the `{"steps": 0}` row. Training wall seconds are measured with this
script alone on the machine (the load average is recorded beside them).

Results: bench/results/retrain_sweep.json (rows appended per setting, so a run cut short keeps
what it measured) and a table on stdout.
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
from recipe_eval import EvalSet, chip_descriptors, float_descriptors, scores  # noqa: E402

from chipq.importers import load_model  # noqa: E402
from chipq.quant.compress import calibration_batch  # noqa: E402
from chipq.quant.quantize import quantize_stack  # noqa: E402
from chipq.quant.reconstruct import reconstruct  # noqa: E402
from chipq.retrain.config import RetrainConfig  # noqa: E402
from chipq.retrain.pipeline import reconstruct_config  # noqa: E402
from chipq.retrain.trainer import Retrainer, load_training_images, torch_settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PLAN = [3] * 7 + [1] * 6
TRAINING_FIELDS = {"steps", "batch", "crop", "samples", "lr", "seed", "train_from", "map_weight", "desc_weight",
                   "init_images", "init_positions", "desc_center"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="float model (default: the real VGG-16 in `chipq fetch-vgg16`'s cache)")
    parser.add_argument("--train", type=Path, default=REPO / "compressor" / "data" / "photos")
    parser.add_argument("--eval", type=Path, default=None, help="held-out set of bench/evalset.py (default: built into <work>/evalset)")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK, help="where the evaluation set is built")
    parser.add_argument("--settings", nargs="+", default=["{}"], help="JSON objects of RetrainConfig fields")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrain_sweep.json")
    parser.add_argument("--append", action="store_true", help="add the rows to those already in --out")
    args = parser.parse_args(argv)
    args.model = cm.resolve_model(args.model)
    args.eval = args.eval or cm.eval_set(args.work)
    log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731
    settings = [json.loads(s) for s in args.settings]
    for s in settings:
        if set(s) - TRAINING_FIELDS:
            parser.error(f"{s}: only training fields ({', '.join(sorted(TRAINING_FIELDS))})")
    torch.set_num_threads(2)
    stack = load_model(args.model).without_trailing_pool()
    eset = EvalSet.load(args.eval)
    log(f"{len(eset.names)} evaluation images, {len(eset.gt)} queries")
    float_desc = float_descriptors(stack, eset)
    result = {
        "model": str(args.model), "plan": cm.MAIN_PLAN, "train": str(args.train), "eval": str(args.eval),
        "eval_images": len(eset.names), "queries": len(eset.gt), "cpus": os.cpu_count(),
        "float": scores(eset, float_desc, float_desc), "rows": [],
    }  # fmt: skip
    if args.append and args.out.is_file():  # keep an earlier run's rows (same set, same float mAP)
        earlier = json.loads(args.out.read_text())
        if earlier.get("float") != result["float"] or earlier.get("eval_images") != result["eval_images"]:
            parser.error(f"{args.out}: measured on another evaluation set; not appending")
        result["rows"] = earlier["rows"]
    log(f"float {result['float']}")
    base = RetrainConfig()
    calib = calibration_batch(args.train)
    starts: dict = {}  # (init_images, init_positions) -> (reconstructed stack, fracs, seconds)

    def start_of(config: RetrainConfig):
        key = (config.init_images, config.init_positions)
        if key not in starts:
            t0 = time.monotonic()
            rstack, rfracs, _ = reconstruct(stack, PLAN, None, calib[: config.init_images], reconstruct_config(config))
            starts[key] = (rstack, rfracs, time.monotonic() - t0)
        return starts[key]

    images = load_training_images(args.train)

    def save() -> None:
        cm.write_json(args.out, result)

    caches: dict = {}
    for setting in settings:
        config = dataclasses.replace(base, **setting)
        load = os.getloadavg()[0]
        rstack, rfracs, reconstruct_s = start_of(config)
        if config.steps == 0:
            model, _ = quantize_stack(rstack, PLAN, rfracs)
            cache_s = train_s = 0.0
        else:
            with torch_settings(config.threads):
                trainer = Retrainer(stack, PLAN, rfracs, config, (224, 224), init=rstack)
                key = (config.samples, config.crop, config.seed, config.train_from, config.init_images, config.init_positions)
                if key in caches:  # the same samples through the same frozen prefix: reuse
                    trainer.inputs, trainer.targets, trainer.data_hash, cache_s = caches[key]
                else:
                    t0 = time.monotonic()
                    trainer.build_cache(images)
                    cache_s = time.monotonic() - t0
                    caches[key] = (trainer.inputs, trainer.targets, trainer.data_hash, cache_s)
                t0 = time.monotonic()
                for _ in range(config.steps):
                    trainer.train_step()
                train_s = time.monotonic() - t0
                model, _ = trainer.chip_model()
        row = {"setting": setting, "config": dataclasses.asdict(config), "reconstruct_s": reconstruct_s,
               "cache_s": cache_s, "train_s": train_s,
               "load": load, **scores(eset, chip_descriptors(model, eset), float_desc)}  # fmt: skip
        row["gap"] = row["map"] - result["float"]["map"]
        result["rows"].append(row)
        save()
        log(f"{json.dumps(setting)}: mAP {row['map']:.4f} ({row['gap']:+.4f}) cosine {row['cosine']:.4f} "
            f"cache {cache_s:.0f} s, {config.steps} steps {train_s:.0f} s")  # fmt: skip
    save()
    print(render_markdown(result))


SHOWN = ("steps", "lr", "batch", "samples", "crop", "map_weight", "desc_weight", "desc_center", "init_images",
         "init_positions")


def _base(result: dict) -> dict:
    return dataclasses.asdict(RetrainConfig())


def _difference(config: dict, base: dict) -> str:
    """A row's settings as they differ from today's default ("default" when they do not)."""
    changed = {k: v for k, v in config.items() if base.get(k) != v}
    return "default" if not changed else ", ".join(f"`{k}={v}`" for k, v in changed.items())


def render_markdown(result: dict) -> str:
    """The BENCHMARKS.md table of bench/results/retrain_sweep.json."""
    import common as cm

    fl = result["float"]["map"]
    lines = [
        f"Algorithm 1 settings (`bench/retrain_sweep.py`): every blob from the full reconstruction its init_images and init_positions give, evaluated "
        f"through the integer executor on the whole evaluation set ({result['eval_images']} images, "
        f"{result['queries']} queries); float mAP {fl:.4f}. Each row names what differs from today's default "
        f"({', '.join(f'{k} {v}' for k, v in _base(result).items() if k in SHOWN)}). Seconds are wall "
        "time; the machine ran another job beside some rows (load average in the JSON).",
        "",
        cm.md_table(
            ["setting", "mAP", "gap to float", "cosine", "reconstruct s", "cache s", "train s"],
            [[_difference(r["config"], _base(result)), f"{r['map']:.4f}", f"{r['gap']:+.4f}", f"{r['cosine']:.4f}",
              cm.fmt(r.get("reconstruct_s", result.get("reconstruct_s")), 0), f"{r['cache_s']:.0f}", f"{r['train_s']:.0f}"]
             for r in result["rows"]],  # fmt: skip
            "lrrrrrr",
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
