"""`chipq extract`: the descriptors of a folder of images, in one process or on Ray, as one file.

Both routes check the same things before the first image (the output paths, the network, the
input size against the chip's buffers), record the same metadata, describe each image through
`chipq.retrieval.describe.describe_all` and end in the same summary (`ExtractResult`); the finished
files are identical. One process checkpoints in ``OUT.partial.npz``
(`chipq.retrieval.descriptors.DescriptorStore`); Ray works in resumable shards in ``OUT.shards/``
(`chipq.retrieval.distributed`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chipq.errors import UsageError
from chipq.pipeline.sources import Network, load_network
from chipq.retrieval.describe import DescribeSummary, NoImageUsable
from chipq.retrieval.descriptors import DescriptorKind
from chipq.retrieval.rois import rnip_levels

Progress = Callable[[int, int], None]  # (images done, images in the run)


@dataclass(frozen=True)
class ExtractSettings:
    """Everything but the images, the network and the output that a run depends on.

    Attributes:
        kind: the descriptor kind written.
        rnip: None for NIP, or 5 / 9 / 14 RNIP crops.
        input_hw: network input (height, width); None: the blob's input buffer, 224x224 for a model.
        input_label: how the user gave `input_hw`, for messages (``"--input 640x480"``).
        batch: network inputs per executor call.
        checkpoint_seconds: seconds between checkpoints of a single-process run.
        workers: None for one process, else Ray actors.
        ray_address: an existing Ray cluster (with `workers`).
        shard_size: images per shard (with `workers`).
    """

    kind: DescriptorKind = DescriptorKind.FLOAT
    rnip: int | None = None
    input_hw: tuple[int, int] | None = None
    input_label: str = ""
    batch: int = 8
    checkpoint_seconds: float = 30.0
    workers: int | None = None
    ray_address: str | None = None
    shard_size: int | None = None  # None: DEFAULT_SHARD_SIZE with workers


DEFAULT_SHARD_SIZE = 64


@dataclass
class ExtractResult:
    """What a run wrote and did: the same summary for one process and for Ray (which adds the shard counts)."""

    output: Path
    images: int
    summary: DescribeSummary
    settings: ExtractSettings
    input_hw: tuple[int, int]
    source: str  # the network's label, "blob:NAME" or "model:NAME"
    shards: int | None = None  # Ray only
    shards_resumed: int | None = None


def extract(
    images: Path,
    output: Path,
    *,
    blob: Path | None = None,
    model: Path | None = None,
    settings: ExtractSettings = ExtractSettings(),
    on_progress: Progress | None = None,
) -> ExtractResult:
    """Describe every image of `images` (a folder, recursive, or a list file) into `output`.

    Args:
        images: the images.
        output: the descriptor file (.npz) to write.
        blob, model: the network: exactly one.
        settings: the run's settings.
        on_progress: called with (done, total) once the run is set up (done: what was resumed)
            and after each image (one process) or shard (Ray).

    Raises:
        UsageError, FileRefused, FormatError...: refused before the first image is described.
        NoImageUsable: no image could be decoded; nothing is written.
    """
    from chipq.formats.fileio import check_output, exclusive_output
    from chipq.retrieval.descriptors import partial_path

    if (blob is None) == (model is None):
        raise UsageError("give exactly one of --blob BLOB or --model MODEL")
    if settings.rnip is not None:
        rnip_levels(settings.rnip)  # refuses anything but 5, 9, 14
    if settings.ray_address is not None and settings.workers is None:
        raise UsageError("--ray-address needs --workers N")
    if settings.shard_size is not None and settings.workers is None:
        raise UsageError("--shard-size needs --workers N (one process writes no shards)")
    # Everything that can be refused is refused before the first image is described.
    inputs = [("image folder" if os.path.isdir(images) else "image list", images), ("blob", blob), ("model", model)]
    check_output(output, "descriptor file", "--output", inputs=inputs)
    if settings.workers is not None:
        from chipq.retrieval.distributed import require_ray

        require_ray()  # before any work: one line saying how to install it
        with exclusive_output(output, "descriptor file", "--output"):
            return _on_ray(images, output, blob, model, settings, on_progress)
    check_output(partial_path(output), "checkpoint", "--output", inputs=inputs)
    with exclusive_output(output, "descriptor file", "--output"):
        return _in_one_process(images, output, blob, model, settings, on_progress)


def _in_one_process(images, output, blob, model, settings: ExtractSettings, on_progress) -> ExtractResult:
    from chipq.retrieval.describe import describe_all
    from chipq.retrieval.descriptors import DescriptorStore

    items, unnamed = _list_images(images)
    network = load_network(blob=blob, model=model)
    input_hw = _checked_input(network, settings, blob, model)
    features = network.features(_executor_batch(network, input_hw, settings))
    metadata = _metadata(network, settings, input_hw, items)
    store = DescriptorStore(
        output, [name for name, _ in items], kind=settings.kind, metadata=metadata,
        checkpoint_seconds=settings.checkpoint_seconds,
    )
    done = [store.resumed]
    if on_progress is not None:
        on_progress(done[0], len(items))

    def on_image(_name: str) -> None:
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], len(items))

    summary = describe_all(
        items, features, store, size=input_hw, rnip=settings.rnip, batch_size=settings.batch, on_image=on_image
    )
    summary.skipped[:0] = unnamed
    _refuse_nothing_usable(images, len(items) + len(unnamed), summary)
    store.finish()
    return ExtractResult(output, len(items) + len(unnamed), summary, settings, input_hw, network.label)


def _on_ray(images, output, blob, model, settings: ExtractSettings, on_progress) -> ExtractResult:
    from chipq.pipeline.sources import features_from_source
    from chipq.retrieval.distributed import Source, plan_shards, remove_shards, run_shards, write_descriptors

    source = Source.from_file("blob" if blob is not None else "model", blob if blob is not None else model)
    # the same checks and the same metadata as a single-process run (a bad blob is refused here,
    # before a cluster starts), so the finished files are identical
    network = load_network(blob=blob, model=model)
    input_hw = _checked_input(network, settings, blob, model)
    items, unnamed = _list_images(images)
    metadata = _metadata(network, settings, input_hw, items)
    plan = plan_shards(  # refuses another run's shards before anything starts
        items, output, source, kind=settings.kind, rnip=settings.rnip, size=input_hw, batch=settings.batch,
        metadata=metadata, shard_size=settings.shard_size or DEFAULT_SHARD_SIZE,
    )
    done = [sum(len(plan.slices[i]) for i in plan.done)]
    if on_progress is not None:
        on_progress(done[0], len(items))

    def on_shard(count: int, _shards: int) -> None:
        done[0] += count
        if on_progress is not None:
            on_progress(done[0], len(items))

    described = run_shards(
        plan, workers=settings.workers, ray_address=settings.ray_address,
        load_features=features_from_source, on_shard=on_shard,
    )
    summary = plan.summary(described)
    summary.skipped[:0] = unnamed
    if summary.described + summary.resumed == 0:
        remove_shards(plan)  # they hold only skips
    _refuse_nothing_usable(images, len(items) + len(unnamed), summary)
    write_descriptors(plan)
    return ExtractResult(
        output, len(items) + len(unnamed), summary, settings, input_hw, network.label, len(plan.slices), plan.shards_resumed
    )


def _list_images(images: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """(name, path) of every image, in the order of the descriptor file, and (name, reason) of the
    images whose names a descriptor file cannot hold (`name_problem`): skipped before any work."""
    from chipq.images import image_names, list_images
    from chipq.retrieval.descriptors import name_problem

    paths = list_images(images)
    if not paths:
        raise UsageError(f"{images}: no JPEG or PNG image found")
    items, unnamed = [], []
    for name, path in zip(image_names(paths, images), paths):
        problem = name_problem(name)
        if problem:
            unnamed.append((name, problem))
        else:
            items.append((name, path))
    return items, unnamed


def _checked_input(network: Network, settings: ExtractSettings, blob: Path | None, model: Path | None = None) -> tuple[int, int]:
    """The network input size, refused when the chip's buffers cannot hold it (one executor call)."""
    from chipq.executor.memory import check_fits, check_input_size

    input_hw = settings.input_hw or network.default_input
    what = (settings.input_label or f"input (height, width) {input_hw}") if settings.input_hw else str(blob or model)
    check_input_size(network.layers, input_hw, what)
    check_fits(network.layers, input_hw, _executor_batch(network, input_hw, settings), what)
    return input_hw


def _executor_batch(network: Network, input_hw: tuple[int, int], settings: ExtractSettings) -> int:
    """Inputs per executor call: ``--batch``, fewer at large input sizes (`chipq.executor.memory.fitting_batch`:
    8 inputs of 640x480 are 2.5 GB of maps; the descriptors do not change)."""
    from chipq.executor.memory import fitting_batch

    return fitting_batch(network.layers, input_hw, settings.batch)


def _metadata(network: Network, settings: ExtractSettings, input_hw, items) -> dict:
    from chipq.retrieval.describe import images_sha256, run_metadata

    names, paths = [name for name, _ in items], [path for _, path in items]
    return run_metadata(
        model=network.label, rnip=settings.rnip, size=input_hw, **network.identity,
        images_sha256=images_sha256(names, paths),
    )


def _refuse_nothing_usable(images: Path, listed: int, summary: DescribeSummary) -> None:
    if summary.described + summary.resumed == 0:
        first = summary.skipped[0] if summary.skipped else ("", "")
        raise NoImageUsable(
            f"{images}: no image could be used ({listed} listed, {len(summary.skipped)} skipped; "
            f"first: {first[1]}); nothing written"
        )
