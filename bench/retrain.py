"""Retraining on the real VGG-16: descriptor cosine and retrieval mAP before and after, vs minutes.

Run (about 45 minutes on the 2-core machine; nohup it):

    .venv/bin/python bench/retrain.py [--model vgg16.pt] --minutes 30

Training images: samples/ (the 9 photos and their 54 query variants). Evaluation images:
UKBench-56 in the shared data beside the checkout (``../shared/data/ukbench56``; 56 UKBench photos, 14 objects x 4 views; every image is a query,
the query excluded from its own ranking). The two sets are disjoint.

Measured, for the float model, the post-training blob and the retrained model at a few points of
the run: NIP descriptor mAP (float and 512-bit codes), the UKBench N-S score (relevant images in the
top 4, the query included, out of 4), and the mean cosine of the NIP descriptors to the float
model's. Minutes on the curve are retraining wall time: sample caching plus training steps, the
evaluations excluded. Points on the curve run the quantized layers through `chipq.retrain.qat.QatNet`
(the chip's arithmetic in float32) on the chip's own conv3 output; the final point runs the packed
blob through the integer executor, and the JSON records how far the two descriptors differ.
Also measured: the cost of one training step against a plain PyTorch float training step of the
whole model and of the trained layers alone.

Results: bench/results/retrain.json, and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common as cm
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from chipq.executor.fast import FastExecutor
from chipq.floatnet.reference import FloatReference, normalise
from chipq.floatnet.torchnet import stack_to_torch
from chipq.formats.writer import write_blob
from chipq.images import list_images, load_image
from chipq.importers import load_model
from chipq.quant.calibrate import calibration_batch, default_calib_dir
from chipq.quant.compress import calibrate
from chipq.retrain.config import RetrainConfig
from chipq.retrain.trainer import Retrainer, load_training_images, torch_settings
from chipq.retrieval.describe import rotated_inputs
from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, encode
from chipq.retrieval.pooling import finish, nip_rotation_vector
from chipq.retrieval.scoring import evaluate, load_ground_truth

REPO = Path(__file__).resolve().parent.parent
PLAN = [3] * 7 + [1] * 6
SIZE = (224, 224)
ROTATIONS = 4


def eval_inputs(folder: Path) -> tuple[list[str], np.ndarray]:
    """Every image's four NIP inputs (224x224, turned 0/90/180/270): names, uint8 (4N, 3, H, W)."""
    paths = list_images(folder)
    stacked = np.stack([np.stack(rotated_inputs(load_image(p), SIZE)) for p in paths])
    return [p.name for p in paths], np.ascontiguousarray(stacked.reshape(-1, *SIZE, 3).transpose(0, 3, 1, 2))


def descriptors(maps: np.ndarray) -> np.ndarray:
    """NIP descriptors from the maps of every image's four rotations, (N, C)."""
    grouped = maps.reshape(-1, ROTATIONS, *maps.shape[1:])
    return np.stack([finish(np.stack([nip_rotation_vector(m) for m in group])) for group in grouped])


def scores(names: list[str], desc: np.ndarray, reference: np.ndarray, gt: dict, groups: list[list[str]]) -> dict:
    """mAP (float and bit codes), N-S score and mean cosine to the float descriptors."""
    dim = desc.shape[1]
    result = {}
    for kind in (DescriptorKind.FLOAT, DescriptorKind.BIT):
        dset = DescriptorSet(names, encode(desc, kind), kind, dim)
        result[f"map_{kind.value}"] = evaluate(dset, gt).mean_ap
    unit = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    group_of = {name: g for g, members in enumerate(groups) for name in members}
    top4 = np.argsort(-(unit @ unit.T), axis=1, kind="stable")[:, :4]
    result["ns_score"] = float(np.mean([sum(group_of[names[j]] == group_of[names[i]] for j in row) for i, row in enumerate(top4)]))
    result["cosine_to_float"] = float(np.mean((unit * ref).sum(axis=1)))
    return result


def step_costs(stack, trainer: Retrainer, batch: int, repeats: int = 3) -> dict:
    """Seconds per training step, measured back to back under the same machine load: a retraining
    step, plain float training of the whole model, and of the trained layers alone."""
    begin = time.perf_counter()
    for _ in range(repeats):
        trainer.train_step()
    qat = (time.perf_counter() - begin) / repeats

    def timed(net, x, target, params):
        optimizer = torch.optim.Adam(params, lr=1e-6)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(net(x), target).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        return float(np.median(times[1:]))  # the first step warms up the allocator

    pixels = np.random.default_rng(0).integers(0, 256, (batch, 3, trainer.config.crop, trainer.config.crop), dtype=np.uint8)
    full = stack_to_torch(stack).train()
    x = torch.from_numpy(normalise(pixels, stack.mean, stack.std))
    with torch.no_grad():
        target = full(x)
    whole = timed(full, x, target, full.parameters())
    suffix = stack_to_torch(trainer.float_stack()).train()
    names = [name for name, _ in trainer.net.kinds]
    layers = torch.nn.ModuleList([suffix.layers[n] for n in names])

    def run_suffix(inp):
        for name, module in zip(names, layers):
            inp = torch.relu(module(inp)) if isinstance(module, torch.nn.Conv2d) else module(inp)
        return inp

    part = timed(run_suffix, *trainer.batch(torch.arange(batch)), layers.parameters())
    return {"qat_step_s": qat, "float_whole_model_step_s": whole, "float_trained_layers_step_s": part}


def cost_only(args, console: Console) -> None:
    """`--cost-only`: measure the step costs on a quiet machine and update them in the JSON."""
    config = RetrainConfig(steps=10**6, lr=args.lr, samples=16, seed=args.seed)
    with torch_settings(config.threads):
        stack = load_model(args.model).without_trailing_pool()
        fracs = calibrate(stack, calibration_batch(default_calib_dir(), SIZE))
        trainer = Retrainer(stack, PLAN, fracs, config, SIZE)
        begin = time.monotonic()
        trainer.build_cache(load_training_images(args.train))
        per_sample = (time.monotonic() - begin) / config.samples
        trainer.train_step()  # warm-up
        costs = {**step_costs(stack, trainer, config.batch, repeats=5), "cache_s_per_sample": per_sample}
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result["step_cost_quiet"] = costs
    cm.write_json(args.out, result)
    console.print(costs)


def qat_descriptors(trainer: Retrainer, prefix_out: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        maps = torch.cat([trainer.net(prefix_out[i : i + 16]) for i in range(0, len(prefix_out), 16)])
    return descriptors(maps.numpy())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="float model (default: the real VGG-16 in `chipq fetch-vgg16`'s cache)")
    parser.add_argument("--train", type=Path, default=REPO / "samples")
    parser.add_argument("--eval", type=Path, default=cm.UKBENCH, help="UKBench-56 (jpg/, groundtruth.json)")
    parser.add_argument("--minutes", type=float, default=30.0, help="retraining wall time (cache + steps)")
    parser.add_argument("--points", default="2,5,10,15,20,30", help="curve points, minutes")
    parser.add_argument("--lr", type=float, default=RetrainConfig.lr)
    parser.add_argument("--samples", type=int, default=RetrainConfig.samples)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK / "retrain")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrain.json")
    parser.add_argument("--cost-only", action="store_true", help="only measure the step costs (add them to --out)")
    args = parser.parse_args(argv)
    args.model = cm.resolve_model(args.model)
    console = Console(width=max(Console().width, 110))
    if args.cost_only:
        cost_only(args, console)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    log = lambda text: console.log(text)  # noqa: E731

    config = RetrainConfig(steps=10**6, lr=args.lr, samples=args.samples, seed=args.seed)
    with torch_settings(config.threads):
        stack = load_model(args.model).without_trailing_pool()
        fracs = calibrate(stack, calibration_batch(default_calib_dir(), SIZE))
        gt = load_ground_truth(args.eval / "groundtruth.json")
        groups = list(json.loads((args.eval / "groundtruth.json").read_text())["groups"].values())
        names, pixels = eval_inputs(args.eval / "jpg")
        log(f"{len(names)} evaluation images, {len(pixels)} network inputs")

        float_desc = descriptors(FloatReference(stack).run(pixels))
        rows = {"float": scores(names, float_desc, float_desc, gt, groups)}
        log(f"float: {rows['float']}")

        trainer = Retrainer(stack, PLAN, fracs, config, SIZE)
        ptq_model, _ = trainer.chip_model()
        chip_scale = 2.0 ** -ptq_model.activation_fracs()[-1]
        ptq_desc = descriptors(FastExecutor(ptq_model).run(pixels).astype(np.float32) * chip_scale)
        rows["post_training"] = scores(names, ptq_desc, float_desc, gt, groups)
        log(f"post-training: {rows['post_training']}")

        prefix = FastExecutor(trainer.prefix).run(pixels)
        prefix_out = torch.from_numpy(prefix).float() * 2.0**-trainer.prefix.activation_fracs()[-1]

        images = load_training_images(args.train)
        start = time.monotonic()
        trainer.build_cache(images)
        cache_s = time.monotonic() - start
        log(f"cached {config.samples} samples of {len(images)} images in {cache_s:.0f} s")

        points = sorted(float(p) for p in args.points.split(",") if float(p) <= args.minutes)
        curve = [{"minutes": 0.0, "step": 0, **scores(names, qat_descriptors(trainer, prefix_out), float_desc, gt, groups)}]
        train_s = 0.0
        while points:
            begin = time.monotonic()
            trainer.train_step()
            train_s += time.monotonic() - begin
            minutes = (cache_s + train_s) / 60
            if minutes >= points[0]:
                points.pop(0)
                row = {"minutes": minutes, "step": trainer.step}
                row.update(scores(names, qat_descriptors(trainer, prefix_out), float_desc, gt, groups))
                curve.append(row)
                log(f"{row}")

        final_model, _ = trainer.chip_model()
        write_blob(final_model, args.work / "retrained.blob")
        final_desc = descriptors(FastExecutor(final_model).run(pixels).astype(np.float32) * chip_scale)
        rows["retrained"] = scores(names, final_desc, float_desc, gt, groups)
        qat_gap = float(np.abs(final_desc - qat_descriptors(trainer, prefix_out)).max())
        costs = step_costs(stack, trainer, config.batch)
    costs["qat_step_in_run_s"] = train_s / max(1, trainer.step)
    result = {
        "model": str(args.model),
        "plan": cm.MAIN_PLAN,
        "train_images": str(args.train),
        "eval_images": str(args.eval),
        "config": {k: v for k, v in vars(config).items() if k != "steps"},
        "trained_layers": list(trainer.net.weights.keys()),
        "steps": trainer.step,
        "cache_seconds": cache_s,
        "train_seconds": train_s,
        "rows": rows,
        "curve": curve,
        "qat_vs_blob_max_descriptor_diff": qat_gap,
        "step_cost": costs,
    }
    cm.write_json(args.out, result)
    render(result, console)


def render(result: dict, console: Console) -> None:
    table = Table(title="VGG-16 3x7,1x6 on ukbench56 (NIP, 224x224)")
    for column in ("model", "minutes", "step", "mAP float", "mAP 512-bit", "N-S /4", "cos to float"):
        table.add_column(column, justify="left" if column == "model" else "right")

    def add(label, row, minutes="", step=""):
        table.add_row(label, minutes, step, f"{row['map_float']:.4f}", f"{row['map_bit']:.4f}", f"{row['ns_score']:.3f}", f"{row['cosine_to_float']:.4f}")

    add("float", result["rows"]["float"])
    add("post-training blob", result["rows"]["post_training"], "0", "0")
    for row in result["curve"][1:]:
        add("retraining (QAT forward)", row, f"{row['minutes']:.1f}", str(row["step"]))
    add("retrained blob", result["rows"]["retrained"], f"{(result['cache_seconds'] + result['train_seconds']) / 60:.1f}", str(result["steps"]))
    console.print(table)
    for key in ("step_cost", "step_cost_quiet"):
        cost = result.get(key)
        if cost:
            console.print(
                f"{key}: seconds per step (batch {result['config']['batch']}, {result['config']['crop']} px): "
                f"retraining {cost.get('qat_step_s', cost.get('qat_step_in_run_s')):.2f}; plain float training of the whole VGG-16 "
                f"{cost['float_whole_model_step_s']:.2f}, of the trained layers alone {cost['float_trained_layers_step_s']:.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
