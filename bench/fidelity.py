"""Fidelity: retrieval mAP of the float model, the post-training blob and a retrained blob.

The analogue of the paper's Tables 1 and 2, on photos we have (the paper's are INRIA Holidays):

- ``ukbench``: ../shared/data/ukbench56 (beside the checkout), 56 UKBench photos at 640x480 (14 objects x 4 views);
  every image is a query, ranked against the other 55 (the query excluded from its own ranking);
  also the UKBench N-S score (relevant images among the top 4, the query included; 4 is perfect).
- ``samples``: samples/, the 54 query variants (crops, rotations, JPEG 15, ...) against the 9
  photos, other queries left out of the database (``exclude_queries``).

Methods (`chipq.retrieval.describe.describe`): ``nip`` (NIP at the chip's 224x224), ``nip_large`` (NIP at
640x480, float only: the paper's "float VGG-16 + NIP 640x480" row), ``rnip9`` (R-MAC levels 1-2:
9 crops on a 4:3 image, each at 224x224, 4 rotations each; ``--rnip 5`` is the same setting) and
``rnip14`` (levels 1-3: 21 crops on 4:3). Descriptor kinds float, byte and bit are encodings of the
same float descriptors (`chipq.retrieval.descriptors.encode`). Also reported: the mean cosine between each chip
descriptor and the float model's descriptor of the same image and method.

Descriptors are cached per (dataset, model, method) in ``<work>/fidelity`` (keyed by the model
file's sha256), so a rerun only scores.

Run: ``python bench/fidelity.py [--model vgg16.pt] [--blob B] [--retrained B] [--configs SPEC]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import common as cm
import numpy as np

KINDS = ("float", "byte", "bit")
# RNIP-14 is 84 network inputs per 640x480 photo: about 2.5 s per photo per chip model with the int8
# route of the fast executor, 6.5 s for PyTorch float.
DEFAULT_CONFIGS = "ukbench:nip,nip_large,rnip9,rnip14;samples:nip,rnip9"
FLOAT_ONLY = {"nip_large"}
FLOOR_METHODS = {"nip"}  # the random-weight floor is scored with these methods only
RANDOM_SEED = 0
BATCH = 16

# The seed paper's INRIA Holidays mAP (a different, larger data set: 1491 photos, 500 queries).
PAPER_HOLIDAYS = [
    ("float VGG-16, NIP (224x224)", 0.806),
    ("float VGG-16, RNIP-5x", 0.842),
    ("float VGG-16, RNIP-14x", 0.852),
    ("float VGG-16, NIP at 640x480", 0.8681),
    ('compressed VGG-16 ("2-bit", 3x7,1x6), RNIP-9x', 0.8694),
]


@dataclass(frozen=True)
class Dataset:
    """Images (a folder), their ground truth and how queries are ranked."""

    name: str
    images: Path
    gt: Path
    exclude_queries: bool


def datasets(ukbench: Path = cm.UKBENCH, samples: Path = cm.SAMPLES) -> dict[str, Dataset]:
    return {
        "ukbench": Dataset("ukbench", Path(ukbench) / "jpg", Path(ukbench) / "groundtruth.json", False),
        "samples": Dataset("samples", Path(samples), Path(samples) / "groundtruth.json", True),
    }


def methods(chip_hw: tuple[int, int], large_hw: tuple[int, int]) -> dict[str, dict]:
    chip, large = cm.hw_text(chip_hw), cm.hw_text(large_hw)
    return {
        "nip": {"size": chip_hw, "rnip": None, "label": f"NIP {chip}"},
        "nip_large": {"size": large_hw, "rnip": None, "label": f"NIP {large}"},
        "rnip9": {"size": chip_hw, "rnip": 9, "label": f"RNIP-9 ({chip} crops)"},
        "rnip14": {"size": chip_hw, "rnip": 14, "label": f"RNIP-14 ({chip} crops)"},
    }


def random_stack(stack):
    """The same layer shapes with random weights (He normal, fan-out, as torchvision initialises
    VGG; zero biases): the score a network with no training gets, i.e. the floor of the table."""
    from chipq.floatnet.model import FloatConv, FloatStack

    rng = np.random.default_rng(RANDOM_SEED)
    layers = []
    for layer in stack.layers:
        if isinstance(layer, FloatConv):
            std = np.sqrt(2.0 / (9 * layer.out_channels))
            weight = (rng.standard_normal(layer.weight.shape) * std).astype(np.float32)
            layer = FloatConv(layer.name, weight, np.zeros_like(layer.bias))
        layers.append(layer)
    return FloatStack(layers, stack.mean, stack.std, "random")


def parse_configs(text: str) -> dict[str, list[tuple[str, set[str] | None]]]:
    """``"ukbench:nip,rnip14@float+ptq;samples:nip"`` -> {dataset: [(method, models or None), ...]}.

    ``@model+model`` limits a method to those models; without it every model runs.
    """
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, items = part.partition(":")
        methods_ = []
        for item in filter(None, (i.strip() for i in items.split(","))):
            method, _, models = item.partition("@")
            methods_.append((method.strip(), {m.strip() for m in models.split("+")} if models else None))
        out[name.strip()] = methods_
    return out


# --- descriptors ----------------------------------------------------------------------------------


def descriptors(
    dataset: Dataset,
    model_key: str,
    model_sha: str,
    features,
    method: dict,
    method_key: str,
    work: Path,
    limit: int | None = None,
) -> tuple[list[str], np.ndarray, float | None]:
    """The float descriptors of the images of `dataset` (the first `limit`), cached or computed now.

    Returns:
        names, float32 (N, D), and the seconds spent computing (None when cached).
    """
    from chipq.images import image_names, list_images
    from chipq.retrieval.describe import describe_all, run_metadata
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorStore, load_descriptors

    paths = list_images(dataset.images)[:limit]
    names = image_names(paths, dataset.images)
    suffix = f"-first{limit}" if limit else ""
    out = Path(work) / "fidelity" / dataset.name / f"{model_key}-{method_key}{suffix}.npz"
    meta = run_metadata(model=model_sha, rnip=method["rnip"], size=tuple(method["size"]), images=len(names))
    meta = json.loads(json.dumps(meta, sort_keys=True))
    if out.is_file():
        cached = load_descriptors(out)
        if cached.metadata == meta and cached.names == names:
            return cached.names, cached.codes, None
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    store = DescriptorStore(out, names, kind=DescriptorKind.FLOAT, metadata=meta, checkpoint_every=8)
    started = time.perf_counter()
    summary = describe_all(list(zip(names, paths)), features(), store, size=tuple(method["size"]),
                           rnip=method["rnip"], batch_size=BATCH)  # fmt: skip
    if summary.skipped:
        raise RuntimeError(f"{dataset.name}: could not read {summary.skipped[0]}")
    dset = store.finish()
    return dset.names, dset.codes, time.perf_counter() - started


def scores(names: list[str], vectors: np.ndarray, dataset: Dataset, partial: bool = False) -> dict:
    """mAP per descriptor kind, and the N-S score when the ground truth lists groups.

    With `partial` (a --quick run described only the first images) the ground truth is cut down to
    the queries described and the positives among them.
    """
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, encode
    from chipq.retrieval.scoring import evaluate, load_ground_truth

    gt = load_ground_truth(dataset.gt)
    if partial:
        present = set(names)
        gt = {q: [p for p in pos if p in present] for q, pos in gt.items() if q in present}
    result = {}
    for kind in map(DescriptorKind, KINDS):
        dset = DescriptorSet(names, encode(vectors, kind), kind, vectors.shape[1])
        evaluation = evaluate(dset, gt, exclude_queries=dataset.exclude_queries)
        result[f"map_{kind.value}"] = evaluation.mean_ap
        result["queries"] = len(evaluation.results)
    raw = json.loads(dataset.gt.read_text(encoding="utf-8"))
    if isinstance(raw, dict) and isinstance(raw.get("groups"), dict):
        result["ns_score"] = ns_score(names, vectors, raw["groups"])
    return result


def ns_score(names: list[str], vectors: np.ndarray, groups: dict[str, list[str]]) -> float:
    """UKBench N-S score: mean count of same-group images among each image's top 4, itself included."""
    group_of = {name: key for key, members in groups.items() for name in members}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    top = np.argsort(-(unit @ unit.T), axis=1, kind="stable")[:, :4]
    counts = [
        sum(group_of.get(names[i]) is not None and group_of.get(names[j]) == group_of.get(names[i]) for j in row)
        for i, row in enumerate(top)
    ]
    return float(np.mean(counts))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean row-wise cosine between two descriptor matrices of the same images."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean((a * b).sum(axis=1) / np.maximum(norms, 1e-30)))


# --- run ------------------------------------------------------------------------------------------


def run(
    model: Path | None = None,
    blob: Path | None = None,
    retrained: Path | None = None,
    work: Path = cm.DEFAULT_WORK,
    configs: str = DEFAULT_CONFIGS,
    chip_hw: tuple[int, int] = (224, 224),
    large_hw: tuple[int, int] = (480, 640),
    ukbench: Path = cm.UKBENCH,
    samples: Path = cm.SAMPLES,
    threads: int = cm.THREADS,
    random_floor: bool = True,
    limit: int | None = None,
    log=print,
) -> dict:
    """Describe and score every (dataset, method, model) of `configs`; returns JSON-ready results."""
    from chipq.formats.reader import read_blob
    from chipq.importers import load_model
    from chipq.quant.calibrate import default_calib_dir
    from chipq.retrieval.features import chip_features, float_features

    cm.set_threads(threads)
    work = Path(work)
    model_path = cm.resolve_model(model, work)
    blob = Path(blob) if blob else cm.ptq_blob(model_path, cm.MAIN_PLAN, work, default_calib_dir(), chip_hw)
    sources = {"float": model_path, "ptq": blob}
    if retrained:
        sources["retrained"] = Path(retrained)
    shas = {key: cm.sha256_file(path) for key, path in sources.items()}
    if random_floor:
        sources["random"] = model_path
        shas["random"] = f"random-seed{RANDOM_SEED}-of-{shas['float']}"
    makers = {
        "float": lambda: float_features(load_model(model_path), batch=BATCH),
        "random": lambda: float_features(random_stack(load_model(model_path)), batch=BATCH),
        "ptq": lambda: chip_features(read_blob(blob), batch=BATCH),
        "retrained": lambda: chip_features(read_blob(retrained), batch=BATCH),
    }
    all_sets, all_methods = datasets(ukbench, samples), methods(chip_hw, large_hw)
    rows = []
    for set_name, method_keys in parse_configs(configs).items():
        dataset = all_sets[set_name]
        for method_key, only in method_keys:
            method = all_methods[method_key]
            reference = None
            for model_key in sources:
                if (model_key != "float" and method_key in FLOAT_ONLY) or (only and model_key not in only):
                    continue
                if model_key == "random" and method_key not in FLOOR_METHODS:
                    continue
                names, vectors, seconds = descriptors(dataset, model_key, shas[model_key], makers[model_key],
                                                      method, method_key, work, limit)  # fmt: skip
                row = {"dataset": set_name, "method": method_key, "label": method["label"], "model": model_key,
                       "images": len(names), "describe_seconds": seconds}  # fmt: skip
                row.update(scores(names, vectors, dataset, partial=bool(limit)))
                if model_key == "float":
                    reference = vectors
                elif reference is not None and model_key != "random":
                    row["cosine_to_float"] = mean_cosine(vectors, reference)
                rows.append(row)
                took = "cached" if seconds is None else f"{seconds:.0f} s"
                log(f"{set_name:8s} {method_key:10s} {model_key:9s} mAP {row['map_float']:.4f} ({took})")
    return {
        "benchmark": "fidelity",
        "machine": cm.machine_info(),
        "models": {key: {"path": str(path), "sha256": shas[key]} for key, path in sources.items()},
        "random_seed": RANDOM_SEED,
        "plan": cm.MAIN_PLAN,
        "configs": configs,
        "limit": limit,
        "paper_holidays": [{"setting": s, "map": m} for s, m in PAPER_HOLIDAYS],
        "rows": rows,
    }


# --- report ---------------------------------------------------------------------------------------

MODEL_LABELS = {
    "float": "float",
    "ptq": "post-training 3x7,1x6",
    "retrained": "retrained 3x7,1x6",
    "random": "random weights (floor)",
}


def dataset_label(name: str, rows: list[dict]) -> str:
    images, queries = rows[0]["images"], rows[0]["queries"]
    if name == "ukbench":
        return f"UKBench: {images} photos, every image a query against the other {images - 1}"
    if name == "samples":
        return f"samples/: {queries} edited queries against {images - queries} photos"
    return name


def render(result: dict) -> str:
    """The BENCHMARKS.md section."""
    parts = [
        "## Fidelity",
        "",
        "Retrieval mAP (Holidays AP rules, `chipq.retrieval.scoring.evaluate`) of the float model, the "
        f"post-training `{result['plan']}` blob and, when given, a retrained `{result['plan']}` blob. "
        "*byte* and *bit* are the 512-byte and 512-bit encodings of the same descriptors; *cos* is the "
        "mean cosine of each chip descriptor to the float model's for the same image and method; "
        "*N-S* is the UKBench score (same-object images in the top 4, the query included, out of 4). "
        "RNIP-9 on a 4:3 image is R-MAC levels 1-2 (8 regions + the whole image), which is also what "
        "`--rnip 5` gives there; RNIP-14 is levels 1-3 (21 crops on 4:3). The blobs are those the command "
        "above names: `chipq compress` (default, and `--no-retrain`) calibrates and trains on the photo set "
        "shipped with chipq, which shares no photo with UKBench or samples/ (every row held out); the "
        "retrained blob of `bench/retrain.py` (what `run_all.py` passes when no `--retrained` is given) "
        "is trained on samples/ (photos and queries), and then the samples/ rows are not held out.",
    ]
    for set_name in dict.fromkeys(row["dataset"] for row in result["rows"]):
        rows, chosen = [], [r for r in result["rows"] if r["dataset"] == set_name]
        for row in chosen:
            rows.append([
                row["label"], MODEL_LABELS.get(row["model"], row["model"]),
                cm.fmt(row["map_float"], 4), cm.fmt(row["map_byte"], 4), cm.fmt(row["map_bit"], 4),
                cm.fmt(row.get("ns_score"), 2) if "ns_score" in row else "",
                cm.fmt(row.get("cosine_to_float"), 4) if "cosine_to_float" in row else "",
            ])  # fmt: skip
        parts += [
            "",
            f"### {dataset_label(set_name, chosen)}",
            "",
            cm.md_table(["method", "model", "mAP float", "mAP byte", "mAP bit", "N-S", "cos"], rows, "llrrrrr"),
        ]
    pairing = table2_pairing(result)
    if pairing:
        parts += [
            "",
            "### The paper's Table 2 pairing on our data: float NIP at the full image vs the chip's RNIP-9",
            "",
            cm.md_table(["data set", "float, NIP full image", "post-training, RNIP-9", "retrained, RNIP-9",
                         "paper (Holidays): float NIP 640x480 / 2-bit RNIP-9x"], pairing, "lrrrr"),  # fmt: skip
        ]
    paper = [[p["setting"], f"{p['map']:.4f}"] for p in result["paper_holidays"]]
    parts += [
        "",
        "### The paper's numbers (INRIA Holidays — a different data set, not comparable cell by cell)",
        "",
        cm.md_table(["setting", "Holidays mAP"], paper),
        "",
        "Both of our sets are far smaller and easier than Holidays (see the random-weight floor), so "
        "our tables show whether compression keeps the float model's ranking, not where chipq would "
        "land on Holidays.",
    ]
    return "\n".join(parts)


def find_row(result: dict, dataset: str, method: str, model: str) -> dict | None:
    """The row of one (dataset, method, model), or None."""
    wanted = (dataset, method, model)
    return next((r for r in result["rows"] if (r["dataset"], r["method"], r["model"]) == wanted), None)


def table2_pairing(result: dict) -> list[list[str]]:
    """Per data set that has a float ``nip_large`` row: it beside the chip models' RNIP-9 mAP."""

    def find(dataset: str, method: str, model: str) -> str:
        row = find_row(result, dataset, method, model)
        return cm.fmt(row["map_float"], 4) if row else "—"

    paper = {p["setting"]: p["map"] for p in result["paper_holidays"]}
    quoted = f"{paper[PAPER_HOLIDAYS[3][0]]:.4f} / {paper[PAPER_HOLIDAYS[4][0]]:.4f}"
    return [
        [name, find(name, "nip_large", "float"), find(name, "rnip9", "ptq"), find(name, "rnip9", "retrained"), quoted]
        for name in dict.fromkeys(r["dataset"] for r in result["rows"] if r["method"] == "nip_large")
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="float model (default: the real VGG-16, fetched)")
    parser.add_argument("--blob", type=Path, help=f"post-training blob (default: made, {cm.MAIN_PLAN})")
    parser.add_argument("--retrained", type=Path, help="a retrained blob to score beside it")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="dataset:method,...;dataset:...")
    parser.add_argument("--no-random-floor", action="store_true", help="skip the random-weight model")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK)
    parser.add_argument("--results", type=Path, default=cm.RESULTS_DIR)
    args = parser.parse_args(argv)
    result = run(args.model, args.blob, args.retrained, args.work, args.configs,
                 random_floor=not args.no_random_floor)  # fmt: skip
    print(cm.write_result(args.results, "fidelity", result))
    print(render(result))


if __name__ == "__main__":
    sys.exit(main())
