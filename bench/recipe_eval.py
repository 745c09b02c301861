"""Evaluation helpers for bench/recipe.py: held-out photos, NIP descriptors, cosine and mAP.

An evaluation set is a folder with `jpg/` (or the images directly) and `groundtruth.json`
(``{query: [positives]}`` or the UKBench ``{"groups", "relevant"}`` form). `EvalSet.subset` keeps
some of its images (the provisional split of UKBench-56 uses groups 7-13 only). Descriptors are NIP
at 224x224 (four rotations, R-MAC regions, max over rotations, L2), as `chipq extract` computes them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from chipq.executor.fast import FastExecutor
from chipq.floatnet.model import FloatPool, FloatStack
from chipq.floatnet.reference import FloatReference
from chipq.formats.fileio import atomic_write
from chipq.formats.model import ChipModel
from chipq.images import list_images, load_image
from chipq.quant.chipnet import ChipConv, ChipLayer, ChipNet, ChipPool
from chipq.quant.fold import InputFold
from chipq.quant.quantize import quantize_conv
from chipq.retrieval.describe import rotated_inputs
from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, encode
from chipq.retrieval.pooling import finish, nip_rotation_vector
from chipq.retrieval.scoring import evaluate, parse_ground_truth

SIZE = (224, 224)
ROTATIONS = 4


@dataclass
class EvalSet:
    names: list[str]
    pixels: np.ndarray  # uint8 (4N, 3, 224, 224): every image's four rotations
    gt: dict[str, list[str]]

    @classmethod
    def load(cls, folder: Path, keep: set[str] | None = None) -> "EvalSet":
        folder = Path(folder)
        images = folder / "jpg" if (folder / "jpg").is_dir() else folder
        raw = json.loads((folder / "groundtruth.json").read_text())
        gt = parse_ground_truth(raw, str(folder))
        paths = list_images(images)
        relative = [p.relative_to(images).as_posix() for p in paths]
        if not set(gt) & set(relative):  # ground truth by file name (UKBench-56)
            relative = [p.name for p in paths]
        chosen = [(p, n) for p, n in zip(paths, relative) if keep is None or n in keep or p.name in keep]
        paths, names = [p for p, _ in chosen], [n for _, n in chosen]
        stacked = np.stack([np.stack(rotated_inputs(load_image(p), SIZE)) for p in paths])
        pixels = np.ascontiguousarray(stacked.reshape(-1, *SIZE, 3).transpose(0, 3, 1, 2))
        inside = set(names)
        gt = {q: [p for p in pos if p in inside] for q, pos in gt.items() if q in inside}
        return cls(names, pixels, {q: pos for q, pos in gt.items() if pos})

    def every(self, step: int) -> "EvalSet":
        """Every `step`-th image (for cheap curve points: cosine only, no ground truth)."""
        rows = np.arange(0, len(self.names), step)
        pixel_rows = (rows[:, None] * ROTATIONS + np.arange(ROTATIONS)).ravel()
        return EvalSet([self.names[i] for i in rows], self.pixels[pixel_rows], {})


def load_subset(folder: Path, queries_every: int = 1) -> EvalSet:
    """The set of `bench/evalset.py` with every database photo, every `queries_every`-th edited query
    and the positives of those (1: everything)."""
    keep = None
    if queries_every > 1:
        gt = json.loads((Path(folder) / "groundtruth.json").read_text())
        edited = [n for n in sorted(gt) if n.startswith("queries/")]
        keep = {n for n in gt if not n.startswith("queries/")} | set(edited[::queries_every])
        keep |= {p for n in keep for p in gt.get(n, [])}
    return EvalSet.load(folder, keep)


def descriptors(maps: np.ndarray) -> np.ndarray:
    grouped = maps.reshape(-1, ROTATIONS, *maps.shape[1:])
    return np.stack([finish(np.stack([nip_rotation_vector(m) for m in group])) for group in grouped])


def scores(eset: EvalSet, desc: np.ndarray, reference: np.ndarray, per_query: bool = False) -> dict:
    """mAP (`chipq eval --exclude-queries`) and mean cosine of `desc` to `reference`; with
    `per_query` also each query's AP (key ``ap``, ground-truth order) for paired comparisons."""
    dset = DescriptorSet(eset.names, encode(desc, DescriptorKind.FLOAT), DescriptorKind.FLOAT, desc.shape[1])
    unit = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-30)
    ref = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-30)
    found = evaluate(dset, eset.gt, exclude_queries=True) if eset.gt else None
    out = {"map": found.mean_ap if found else None, "cosine": float(np.mean((unit * ref).sum(axis=1)))}
    if per_query and found:
        out["ap"] = [round(float(r.ap), 6) for r in found.results]
    return out


def paired_gap(ap_a: list[float], ap_b: list[float], draws: int = 10000, seed: int = 0) -> dict:
    """mAP(a) − mAP(b) over the same queries with a paired bootstrap 95% interval (queries resampled).

    >>> g = paired_gap([1.0, 0.5, 1.0], [1.0, 0.5, 1.0])
    >>> g["gap"], g["low"], g["high"]
    (0.0, 0.0, 0.0)
    """
    diff = np.asarray(ap_a, np.float64) - np.asarray(ap_b, np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"gap": float(diff.mean()), "low": float(low), "high": float(high), "queries": int(len(diff))}


CACHE = Path(os.environ.get("CHIPQ_BENCH_WORK", Path.home() / ".cache" / "chipq" / "bench")) / "float_descriptors"


def float_descriptors(stack: FloatStack, eset: EvalSet) -> np.ndarray:
    """The float model's descriptors of `eset`, kept in the bench work folder (keyed by the weights,
    the pixels and the descriptor code) so that the next bench run on the same set skips them."""
    key = hashlib.sha256(stack.weights_sha256().encode())
    key.update(hashlib.sha256(eset.pixels.tobytes()).digest())
    for module in (descriptors, finish, nip_rotation_vector, FloatReference):
        key.update(inspect.getsource(module).encode())
    path = CACHE / f"{key.hexdigest()[:24]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    desc = descriptors(FloatReference(stack).run(eset.pixels))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: np.save(handle, desc, allow_pickle=False), what="descriptor cache")
    return desc


def chip_descriptors(model: ChipModel, eset: EvalSet) -> np.ndarray:
    scale = 2.0 ** -model.activation_fracs()[-1]
    return descriptors(FastExecutor(model).run(eset.pixels).astype(np.float32) * scale)


def simulate(
    stack: FloatStack,
    plan: list[int],
    fracs: list[int],
    pixels: np.ndarray,
    quant_weights: set[str],
    quant_acts: bool,
    batch: int = 8,
) -> np.ndarray:
    """The last conv map with only some parts quantized (the ablation): the layers named in
    `quant_weights` get their Eq. 1 weights and 12-bit bias (the rest stay float), and with
    `quant_acts` every conv output goes through the chip's 8-bit activations at `fracs`.

    Runs in the chip's input units (conv1 folded), float32, on the torch chip
    (`chipq.quant.chipnet.ChipNet`), `batch` images at a time. A quantized layer's bias is at the
    fraction bits the chip reaches; every activation at `fracs`.
    """
    stack = stack.without_trailing_pool()
    fold = InputFold.of(stack)
    layers: list[ChipLayer] = []
    in_frac, index = 0, 0
    for item in stack.layers:
        if isinstance(item, FloatPool):
            layers.append(ChipPool(item.name))
            continue
        conv = fold.apply_numpy(item) if index == 0 else item
        layer = quantize_conv(conv, plan[index], in_frac, fracs[index])
        frac = fracs[index] if quant_acts else None
        if item.name in quant_weights:
            layers.append(replace(ChipConv.of_layer(layer, in_frac), frac=frac))
        else:
            layers.append(ChipConv.of_float(conv, frac))
        in_frac = layer.out_frac(in_frac)
        index += 1
    net = ChipNet(layers, fold.mean_int)
    outs = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch):
            outs.append(net.run(net.input(pixels[start : start + batch])).numpy())
    return np.concatenate(outs)
