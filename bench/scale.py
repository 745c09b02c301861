"""Scale: extraction throughput on Ray, and search / evaluation over 100,000 descriptors.

Part 1 — throughput (`--skip-throughput` to leave out). The post-training `3x7,1x6` blob of the real
VGG-16 describes the 56 UKBench photos (NIP, 224x224) three ways: one process (`describe_all`, the
code of `chipq extract`, torch at 1 thread), and `chipq.retrieval.distributed` on a local Ray
cluster of 1 and of 2 workers (1 CPU each, shards of 4 images). Each run's output is checked
equal to the one-process run's. Reported: wall time including Ray's start-up, and the steady rate
(images after the first shard over the time after the first shard), per worker; a 64-core cluster
is projected as 64 x the measured 1-worker steady rate — a linear projection, not a measurement.

Part 2 — scale (`--skip-scale`). Held-out set: the 56 UKBench photos (14 objects x 4 views, never
used to calibrate or train anything here). Distractors, all synthetic, built in two steps:

1. `--crops` real augmented crops of the 9 photos in samples/photos (seeded: a random box of 30-100 %
   of each side, a horizontal flip half the time, a down-scale by 0.5-1.0), each described by the
   float model and by the chip blob — real descriptors of real pixels.
2. Up to `--distractors` vectors, each one crop descriptor times per-element log-normal noise
   ``exp(sigma·e)``, e ~ N(0, 1), sigma = `--sigma`, then L2-normalised. The same noise multiplies
   the float and the chip descriptor of a crop, so the two sets stay paired. These are not
   descriptors of any image: they are the crop descriptors' neighbourhoods, marked ``synthetic``.

Measured for the float model's and the chip's descriptors (float codes; bit codes for the chip):
index build time and resident-memory growth (flat, and ivf with the default nlist), query latency
(one query at a time, the 56 UKBench descriptors), recall@10 of ivf against flat for several
nprobe, and the UKBench mAP without and with the distractors (exact ranking through the index,
`chipq.retrieval.scoring.evaluate`).

Run: ``python bench/scale.py [--model vgg16.pt] [--work DIR] [--crops 1000] [--distractors 100000]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import common as cm
import numpy as np

SHARD = 4
NPROBES = (1, 4, 16, 64)
LATENCY_QUERIES = 56


def child_peak_mb(*args) -> tuple[float, float]:
    """Run `chipq ARGS...` in its own process (`common.run_measured`): (peak resident set in MB, wall seconds)."""
    record = cm.run_measured([cm.chipq_command(), *args], env={"OMP_NUM_THREADS": "1", "CHIPQ_NO_MALLOC_TUNING": "1"})
    return record["peak_kib"] / 1024, record["wall_s"]


# --- part 1 -----------------------------------------------------------------------------------------


def throughput(blob: Path, photos: Path, work: Path) -> dict:
    import torch

    from chipq.formats.reader import read_blob
    from chipq.images import image_names, list_images
    from chipq.pipeline.sources import features_from_source
    from chipq.retrieval.describe import describe_all, run_metadata
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorStore, load_descriptors
    from chipq.retrieval.distributed import Source, plan_shards, run_shards, write_descriptors
    from chipq.retrieval.features import chip_features

    torch.set_num_threads(1)
    paths = list_images(photos)
    names = image_names(paths, photos)
    items = list(zip(names, paths))
    source = Source.from_file("blob", blob)
    metadata = run_metadata(model=f"blob:{blob.name}", rnip=None, size=(224, 224), blob_sha256=source.sha256)
    out = {"images": len(items), "shard_size": SHARD, "runs": {}}
    single = work / "tp-single.npz"
    for stale in work.glob("tp-*"):
        if stale.is_file():
            stale.unlink()
    meter = cm.CpuMeter()
    start = time.perf_counter()
    features = chip_features(read_blob(blob), 8)
    store = DescriptorStore(single, names, kind=DescriptorKind.FLOAT, metadata=metadata, checkpoint_every=10**9)
    loaded = time.perf_counter()
    describe_all(items, features, store, size=(224, 224))
    store.finish()
    end = time.perf_counter()
    out["runs"]["one process"] = {
        "wall_s": end - start,
        "steady_images_per_s": len(items) / (end - loaded),
        "per_worker_images_per_s": len(items) / (end - loaded),
        "other_cpu_share": meter.other_share(),
    }
    reference = load_descriptors(single)
    for workers in (1, 2):
        target = work / f"tp-ray{workers}.npz"
        times = []
        meter = cm.CpuMeter()
        start = time.perf_counter()
        plan = plan_shards(items, target, source, kind=DescriptorKind.FLOAT, rnip=None, size=(224, 224), batch=8, metadata=metadata, shard_size=SHARD)
        run_shards(plan, workers=workers, load_features=features_from_source, on_shard=lambda count, done: times.append((time.perf_counter(), count)))
        write_descriptors(plan)
        end = time.perf_counter()
        got = load_descriptors(target)
        equal = got.names == reference.names and np.array_equal(got.codes, reference.codes)
        after_first = sum(count for _, count in times[1:])
        steady = after_first / (times[-1][0] - times[0][0]) if len(times) > 1 else None
        out["runs"][f"ray {workers} worker{'s' if workers > 1 else ''}"] = {
            "wall_s": end - start,
            "first_shard_after_s": times[0][0] - start,
            "steady_images_per_s": steady,
            "per_worker_images_per_s": steady / workers if steady else None,
            "equal_to_one_process": equal,
            "other_cpu_share": meter.other_share(),
        }
        if not equal:
            raise SystemExit(f"ray {workers}: descriptors differ from the one-process run")
    one = out["runs"]["one process"]
    for key, run in out["runs"].items():
        run["wall_ratio_vs_one_process"] = one["wall_s"] / run["wall_s"]
        run["steady_ratio_vs_one_process"] = (run["steady_images_per_s"] or 0) / one["steady_images_per_s"]
    rate = out["runs"]["ray 1 worker"]["per_worker_images_per_s"]
    out["projection_64_cores"] = {
        "images_per_s": 64 * rate,
        "hours_per_million": 1e6 / (64 * rate) / 3600,
        "basis": "64 x the measured steady rate of one Ray worker (1 CPU); linear, not measured",
    }
    return out


# --- part 2 -----------------------------------------------------------------------------------------


def _crops(photos: Path, count: int, seed: int):
    from PIL import Image

    from chipq.images import list_images, load_image

    rng = np.random.default_rng(seed)
    images = [load_image(p) for p in list_images(photos)]
    for i in range(count):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.3, 1.0)), int(w * rng.uniform(0.3, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        scale = rng.uniform(0.5, 1.0)
        pil = Image.fromarray(np.ascontiguousarray(crop)).resize((max(8, int(cw * scale)), max(8, int(ch * scale))), Image.BILINEAR)
        yield np.asarray(pil)


def crop_descriptors(model_path: Path, blob: Path, photos: Path, count: int, work: Path) -> dict[str, np.ndarray]:
    """Float-model and chip NIP descriptors of `count` seeded crops (cached in the work folder)."""
    cache = work / f"scale-crops-{count}-{cm.sha256_file(blob)[:12]}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    from chipq.formats.reader import read_blob
    from chipq.importers import load_model
    from chipq.retrieval.describe import describe
    from chipq.retrieval.features import chip_features, float_features

    fns = {"float": float_features(load_model(model_path), 8), "chip": chip_features(read_blob(blob), 8)}
    out = {"float": [], "chip": []}
    for img in _crops(photos, count, seed=7):
        for key, fn in fns.items():
            out[key].append(describe(img, fn))
    arrays = {k: np.stack(v).astype(np.float32) for k, v in out.items()}
    np.savez(cache, **arrays)
    return arrays


def held_out(model_path: Path, blob: Path, work: Path, ukbench: Path = cm.UKBENCH) -> dict:
    """UKBench-56 descriptor sets (float model, chip), made with `chipq extract` code, cached."""
    from chipq.formats.reader import read_blob
    from chipq.images import image_names, list_images
    from chipq.importers import load_model
    from chipq.retrieval.describe import describe_all, run_metadata
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorStore, load_descriptors
    from chipq.retrieval.features import chip_features, float_features

    photos = Path(ukbench) / "jpg"
    paths = list_images(photos)
    names = image_names(paths, photos)
    sets = {}
    for key, path, make in (
        ("float", model_path, lambda: float_features(load_model(model_path), 8)),
        ("chip", blob, lambda: chip_features(read_blob(blob), 8)),
    ):
        out = work / f"scale-ukbench-{key}-{cm.sha256_file(path)[:12]}.npz"
        if not out.is_file():
            store = DescriptorStore(out, names, kind=DescriptorKind.FLOAT, metadata=run_metadata(model=key, rnip=None, size=(224, 224)))
            describe_all(list(zip(names, paths)), make(), store, size=(224, 224))
            store.finish()
        sets[key] = load_descriptors(out)
    return sets


def synthetic(crops: dict[str, np.ndarray], count: int, sigma: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, len(crops["float"]), count)
    noise = np.exp(sigma * rng.standard_normal((count, crops["float"].shape[1]))).astype(np.float32)
    out = {}
    for key, vectors in crops.items():
        v = vectors[base] * noise
        out[key] = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def scale(model_path: Path, blob: Path, work: Path, n_crops: int, n_distractors: int, sigma: float, nlist: int | None = None,
          ukbench: Path = cm.UKBENCH) -> dict:
    from chipq.retrieval import index as idx
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, encode
    from chipq.retrieval.scoring import evaluate, load_ground_truth

    gt_path = Path(ukbench) / "groundtruth.json"
    gt = load_ground_truth(gt_path)
    t0 = time.perf_counter()
    crops = crop_descriptors(model_path, blob, cm.SAMPLES / "photos", n_crops, work)
    crop_s = time.perf_counter() - t0
    sets = held_out(model_path, blob, work, ukbench)
    fake = synthetic(crops, n_distractors, sigma, seed=11)
    result = {
        "held_out": "ukbench56 (56 photos, 14 objects x 4 views; never used for calibration or training)",
        "real_crops": n_crops,
        "crop_source": "samples/photos (9 photos): seeded crops 30-100 % per side, flip p=0.5, scale 0.5-1.0",
        "crop_describe_s": crop_s,
        "synthetic_distractors": n_distractors,
        "synthetic_recipe": f"crop descriptor x exp({sigma}·N(0,1)) per element, L2-normalised; same noise for float and chip",
        "database_size": n_distractors + len(sets["float"].names),
        "sets": {},
    }
    for key, kind in (("float", DescriptorKind.FLOAT), ("chip", DescriptorKind.FLOAT), ("chip", DescriptorKind.BIT)):
        label = f"{key} model, {kind.value} codes" if key == "float" else f"chip, {kind.value} codes"
        small = sets[key]
        codes = np.concatenate([encode(small.codes, kind), encode(fake[key], kind)])
        names = small.names + [f"synthetic/{i:06d}" for i in range(n_distractors)]
        big = DescriptorSet(names, codes, kind, small.dim, {"model": key})
        entry = {"map_held_out_alone": evaluate(DescriptorSet(small.names, encode(small.codes, kind), kind, small.dim), gt).mean_ap}
        gc.collect()
        start = time.perf_counter()
        flat = idx.build_index(big)
        flat.faiss_index()
        entry["flat_build_s"] = time.perf_counter() - start
        entry["code_bytes_mb"] = codes.nbytes / 2**20
        entry["memory"] = _command_memory(big, small, gt_path, work, kind)
        queries = codes[: LATENCY_QUERIES]
        entry["flat_ms_per_query"] = _latency(flat, queries)
        _, exact = flat.search(queries, 10)
        start = time.perf_counter()
        entry["map_with_distractors"] = evaluate(big, gt).mean_ap
        entry["eval_with_distractors_s"] = time.perf_counter() - start
        if kind is not DescriptorKind.BIT:
            gc.collect()
            start = time.perf_counter()
            ivf = idx.build_index(big, "ivf", nlist=nlist)
            ivf.faiss_index()
            entry["ivf_build_s"] = time.perf_counter() - start
            entry["ivf_nlist"] = ivf.nlist
            entry["ivf"] = {}
            # Recall is measured on queries that are themselves distractors too (not only the 56).
            probe = np.concatenate([queries, codes[len(small.names) :: max(1, n_distractors // 200)][:200]])
            _, exact_probe = flat.search(probe, 10)
            for nprobe in NPROBES:
                if nprobe > ivf.nlist:
                    continue
                _, approx = ivf.search(probe, 10, nprobe=nprobe)
                entry["ivf"][str(nprobe)] = {
                    "recall_at_10": idx.recall_at(approx, exact_probe, 10),
                    "ms_per_query": _latency(ivf, queries, nprobe=nprobe),
                }
            del ivf
        del flat
        result["sets"][label] = entry
    return result


def _command_memory(big, small, gt_path: Path, work: Path, kind) -> dict:
    """Peak memory of the user's commands on the 56-photo set and on the big one (child processes)."""
    from chipq.retrieval.descriptors import DescriptorSet, encode, save_descriptors

    folder = work / "scale_memory"
    folder.mkdir(parents=True, exist_ok=True)
    small_file, big_file = folder / f"small_{kind.value}.npz", folder / f"big_{kind.value}.npz"
    save_descriptors(small_file, DescriptorSet(small.names, encode(small.codes, kind), kind, small.dim, {"model": "bench"}))
    save_descriptors(big_file, big)
    out = {"descriptor_file_mb": big_file.stat().st_size / 2**20}
    methods = ["flat"] if kind.value == "bit" else ["flat", "ivf"]
    for label, file in (("56", small_file), ("big", big_file)):
        for method in methods:
            index_file = folder / f"{label}_{kind.value}_{method}.index"
            peak, wall = child_peak_mb("index", file, "-o", index_file, "--method", method)
            out[f"index_{method}_{label}_peak_mb"], out[f"index_{method}_{label}_s"] = peak, wall
            if label == "big":
                out[f"index_{method}_file_mb"] = index_file.stat().st_size / 2**20
            # 56 queries (the held-out descriptors) against it: loads the index, builds faiss, searches
            peak, wall = child_peak_mb("search", index_file, small_file, "-k", "10", "--json")
            out[f"search_{method}_{label}_peak_mb"], out[f"search_{method}_{label}_s"] = peak, wall
            index_file.unlink()
        peak, wall = child_peak_mb("eval", file, "--gt", gt_path, "--worst", "1")
        out[f"eval_{label}_peak_mb"], out[f"eval_{label}_s"] = peak, wall
    big_file.unlink()
    small_file.unlink()
    return out


def _latency(index, queries, **kwargs) -> float:
    index.search(queries[:1], 10, **kwargs)  # warm
    start = time.perf_counter()
    for q in queries:
        index.search(q[None], 10, **kwargs)
    return (time.perf_counter() - start) / len(queries) * 1000


def render(data: dict) -> str:
    """The "Scale" section of BENCHMARKS.md, every number from bench/results/scale.json."""
    lines = ["## Scale (bench/scale.py)", ""]
    tp = data.get("throughput")
    if tp:
        lines += [
            f"Extraction throughput, post-training `{data['blob']['plan']}` blob, NIP 224x224, the {tp['images']} UKBench "
            f"photos, shards of {tp['shard_size']}; every Ray output equal to the one-process output "
            "(names and descriptors). Steady rate: images after the first shard over the time after it.",
            "",
            cm.md_table(
                ["run", "wall s", "wall ratio", "steady img/s", "steady ratio", "img/s per worker", "other CPU load"],
                [
                    [
                        name, f"{r['wall_s']:.1f}", f"{r['wall_ratio_vs_one_process']:.2f}",
                        f"{r['steady_images_per_s']:.2f}", f"{r['steady_ratio_vs_one_process']:.2f}",
                        f"{r['per_worker_images_per_s']:.2f}",
                        "" if r.get("other_cpu_share") is None else f"{100 * r['other_cpu_share']:.0f} %",
                    ]
                    for name, r in tp["runs"].items()
                ],
            ),
            "",
            f"A 64-core cluster at the measured 1-worker rate: {tp['projection_64_cores']['images_per_s']:.0f} images/s, "
            f"{tp['projection_64_cores']['hours_per_million']:.1f} hours per million photos "
            f"({tp['projection_64_cores']['basis']}). 'Other CPU load' is the share of the machine other "
            "processes used meanwhile: this machine is shared, so ratios are only as good as that column.",
            "",
        ]
        busiest = max((r.get("other_cpu_share") or 0) for r in tp["runs"].values())
        if busiest > 0.5:
            lines += [
                f"**This run is not a clean measurement**: other jobs used up to {100 * busiest:.0f} % of the "
                "machine's CPU while it ran, so two workers could not get two cores, and the one-process and "
                "Ray rates differ by how busy the machine was at the time as much as by Ray. What it does show: "
                "the outputs are equal, and Ray's fixed start-up (the first shard's delay) is tens of seconds "
                "here. Rerun `python bench/scale.py --skip-scale` on a quiet machine for the ratios.",
                "",
            ]
    sc = data.get("scale")
    if sc:
        lines += [
            f"Search at scale: database = {sc['database_size']:,} descriptors = the 56 held-out UKBench photos + "
            f"{sc['synthetic_distractors']:,} **synthetic** distractors. They are not descriptors of photos: "
            f"{sc['real_crops']} real augmented crops ({sc['crop_source']}) were described by the float model "
            f"and by the chip, then each distractor is {sc['synthetic_recipe']}. Real distractor photos "
            "(Flickr1M-style) would be harder; these test the index's size, speed and recall, and give a "
            "mAP with distractors that is an upper bound of what real ones would give.",
            "",
            cm.md_table(
                ["descriptors", "mAP alone", f"mAP + {sc['synthetic_distractors']:,}", "flat build s", "codes MB",
                 "flat ms/query", "eval s"],
                [
                    [
                        name, f"{e['map_held_out_alone']:.4f}", f"{e['map_with_distractors']:.4f}",
                        f"{e['flat_build_s']:.2f}", f"{e['code_bytes_mb']:.0f}", f"{e['flat_ms_per_query']:.2f}",
                        f"{e['eval_with_distractors_s']:.1f}",
                    ]
                    for name, e in sc["sets"].items()
                ],
            ),
            "",
        ]
        rows = []
        for name, e in sc["sets"].items():
            for nprobe, r in e.get("ivf", {}).items():
                rows.append([name, e["ivf_nlist"], nprobe, f"{r['recall_at_10']:.3f}", f"{r['ms_per_query']:.3f}",
                             f"{e['ivf_build_s']:.1f}"])
        if rows:
            lines += [
                "Approximate search (ivf) against exact (flat): recall@10 over 256 queries (the 56 UKBench "
                "descriptors and 200 distractors), latency one query at a time.",
                "",
                cm.md_table(["descriptors", "nlist", "nprobe", "recall@10", "ms/query", "build s"], rows),
                "",
            ]
        mem_rows = [
            [
                name, f"{m['descriptor_file_mb']:.0f}",
                f"{m['index_flat_56_peak_mb']:.0f}", f"{m['index_flat_big_peak_mb']:.0f}",
                f"{m['index_flat_big_s']:.1f}",
                "" if "index_ivf_big_peak_mb" not in m else f"{m['index_ivf_big_peak_mb']:.0f}",
                "" if "index_ivf_big_s" not in m else f"{m['index_ivf_big_s']:.1f}",
                f"{m['search_flat_56_peak_mb']:.0f}", f"{m['search_flat_big_peak_mb']:.0f}",
                "" if "search_ivf_big_peak_mb" not in m else f"{m['search_ivf_big_peak_mb']:.0f}",
                f"{m['eval_56_peak_mb']:.0f}", f"{m['eval_big_peak_mb']:.0f}", f"{m['eval_big_s']:.1f}",
            ]
            for name, e in sc["sets"].items()
            if (m := e.get("memory"))
        ]
        if mem_rows:
            lines += [
                "Memory of the commands a user runs, each in its own process (peak resident set, `os.wait4`), "
                f"on the 56 UKBench descriptors alone and on the {sc['database_size']:,}-descriptor database; "
                "the (56) columns are the cost of Python, numpy and faiss themselves; `search` runs the 56 "
                "held-out descriptors as queries. `chipq eval` ranks "
                "through the index in blocks of queries, so its memory grows with the database, not with "
                "database x queries.",
                "",
                cm.md_table(
                    ["descriptors", "file MB", "index flat peak MB (56)", "index flat peak MB (big)", "index flat s",
                     "index ivf peak MB (big)", "index ivf s", "search flat peak MB (56)", "search flat peak MB (big)",
                     "search ivf peak MB (big)", "eval peak MB (56)", "eval peak MB (big)", "eval s"],
                    mem_rows,
                ),
                "",
            ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK)
    parser.add_argument("--ukbench", type=Path, default=cm.UKBENCH, help="UKBench-56 (jpg/, groundtruth.json)")
    parser.add_argument("--results", type=Path, default=cm.RESULTS_DIR)
    parser.add_argument("--crops", type=int, default=1000)
    parser.add_argument("--distractors", type=int, default=100_000)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--nlist", type=int, default=None, help="ivf cells (default: chipq index's, about 4·sqrt(N))")
    parser.add_argument("--throughput-from", type=Path, default=None, help="take part 1 from this JSON (a run cut short)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    model = cm.resolve_model(args.model, args.work)
    blob = cm.ptq_blob(model, cm.MAIN_PLAN, args.work, cm.SAMPLES / "photos", (224, 224))
    import faiss
    import ray

    previous = cm.read_result(args.results, "scale") or {}
    data = {
        "machine": {**cm.machine_info(), "faiss": faiss.__version__, "ray": ray.__version__},
        "blob": {"plan": cm.MAIN_PLAN, "sha256": cm.sha256_file(blob)},
        "throughput": previous.get("throughput"),
        "scale": previous.get("scale"),
    }
    if args.throughput_from is not None:
        data["throughput"] = json.loads(args.throughput_from.read_text())["throughput"]
    elif not args.skip_throughput:
        data["throughput"] = throughput(blob, args.ukbench / "jpg", args.work)
        print(json.dumps(data["throughput"], indent=1), flush=True)
    cm.write_result(args.results, "scale", data)  # part 1 kept even if part 2 is cut short
    if not args.skip_scale:
        import torch

        torch.set_num_threads(1)
        data["scale"] = scale(model, blob, args.work, args.crops, args.distractors, args.sigma, args.nlist, args.ukbench)
        print(json.dumps(data["scale"], indent=1), flush=True)
    path = cm.write_result(args.results, "scale", data)
    print(f"results -> {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
