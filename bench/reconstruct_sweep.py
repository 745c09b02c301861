"""Reconstruction settings swept on the real VGG-16 `3x7,1x6`: wall seconds and descriptor cosine.

Run (a few minutes per setting on the 2-core machine):

    .venv/bin/python bench/reconstruct_sweep.py            # the settings below
    .venv/bin/python bench/reconstruct_sweep.py '{"damp": 0.1}' '{"images": 48, "error_feedback": false}'

Each setting is a JSON object of `chipq.quant.reconstruct.ReconstructConfig` fields plus
``images`` (how many of the shipped calibration photos, default 32). For each: the reconstruction's
wall and CPU seconds (the CLI's float calibration is part of it), per-layer relative output error,
and the mean cosine of the chip's NIP descriptor (224x224, integer executor) to the float model's on
every --every-th image of the disjoint evaluation set (`bench/evalset.py`; never a calibration
photo). Wall seconds depend on the machine's load (recorded): cosines do not (deterministic).

Results: bench/results/reconstruct_sweep.json and one JSON line per setting on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as cm  # noqa: E402
from recipe_eval import EvalSet, chip_descriptors, float_descriptors, scores  # noqa: E402

from chipq.importers import load_model  # noqa: E402
from chipq.quant.calibrate import calibration_batch, default_calib_dir  # noqa: E402
from chipq.quant.quantize import quantize_stack  # noqa: E402
from chipq.quant.reconstruct import ReconstructConfig, reconstruct  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PLAN = [3] * 7 + [1] * 6
DEFAULT_SETTINGS = [
    {"damp": 0.01, "float_prior": False, "refit_alphas": False},  # the first reconstruction (pull towards 0)
    {"damp": 0.01, "refit_alphas": False},
    {"damp": 0.01},
    {"damp": 0.1},
    {"damp": 0.3},
    {"damp": 1.0},
    {"damp": 0.3, "error_feedback": False},  # `compress --no-retrain`
    {"damp": 0.3, "images": 48},  # where retraining starts
    {"damp": 0.3, "images": 24},
    {"damp": 0.3, "positions": 4096},
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("settings", nargs="*", help="JSON objects (default: the module's list)")
    parser.add_argument("--model", type=Path, default=None, help="float model (default: the real VGG-16 in `chipq fetch-vgg16`'s cache)")
    parser.add_argument("--eval", type=Path, default=None, help="held-out set of bench/evalset.py (default: built into <work>/evalset)")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK, help="where the evaluation set is built")
    parser.add_argument("--every", type=int, default=10, help="every N-th evaluation image")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "reconstruct_sweep.json")
    args = parser.parse_args(argv)
    args.model = cm.resolve_model(args.model)
    args.eval = args.eval or cm.eval_set(args.work)
    torch.set_num_threads(2)
    settings = [json.loads(s) for s in args.settings] or DEFAULT_SETTINGS
    stack = load_model(args.model).without_trailing_pool()
    small = EvalSet.load(args.eval).every(args.every)
    reference = float_descriptors(stack, small)
    calib = calibration_batch(default_calib_dir())
    rows = []
    for setting in settings:
        kw = dict(setting)
        images = kw.pop("images", 32)
        wall, cpu = time.monotonic(), time.process_time()
        rebuilt, fracs, stats = reconstruct(stack, PLAN, None, calib[:images], ReconstructConfig(**kw))
        row = {"setting": setting, "images": images, "wall_s": round(time.monotonic() - wall, 1),
               "cpu_s": round(time.process_time() - cpu, 1), "load": round(os.getloadavg()[0], 2)}  # fmt: skip
        model, _ = quantize_stack(rebuilt, PLAN, fracs)
        row["cosine"] = round(scores(small, chip_descriptors(model, small), reference)["cosine"], 4)
        row["rel_out_err"] = [round(s.rel_out_err, 3) for s in stats]
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"model": str(args.model), "plan": cm.MAIN_PLAN, "eval_images": len(small.names), "every": args.every,
              "cpus": os.cpu_count(), "rows": rows}  # fmt: skip
    cm.write_json(args.out, result)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
