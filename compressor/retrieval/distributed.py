"""`chipq extract --workers N`: descriptor extraction on a Ray cluster, in resumable shards.

How a run goes (`chipq.pipeline.extract` sequences it: `plan_shards`, `run_shards`, `write_descriptors`):

1. The driver lists the images (the same list and names as a single-process run), cuts the list
   into shards of `shard_size` consecutive images (`ShardPlan`), and writes
   ``OUT.shards/manifest.json``: the sha256 of the blob or float model, every setting that changes
   a descriptor (descriptor kind, RNIP, input size) or the shard layout (shard size, executor
   batch), the sha256 of the image list (names and paths), and the content hash of the images.
2. Ray Data runs ``map_batches`` over one row per pending shard with a pool of `ShardDescriber`
   actors: each actor receives the model bytes once (through Ray's object store, so the workers
   need no copy of the model file), turns them into a feature function once with the loader the
   caller passes (this package loads no model), then for every shard reads and decodes the
   images itself (the paths must be readable on every node) and runs `chipq.retrieval.describe.describe_all`
   — the very function a single-process `chipq extract` runs, image by image.
3. The driver writes each finished shard atomically (`chipq.formats.fileio.atomic_write`) to
   ``OUT.shards/shard-NNNNN.npz`` as it arrives. A killed run leaves the manifest and its finished
   shards; the next run with the same manifest redoes only the missing shards. A manifest that
   differs (another model, another setting, other images, or changed image files) is refused with
   a message naming what changed.
4. When every shard is there, the driver encodes the float descriptors and assembles them in
   image-list order with `chipq.retrieval.descriptors.assemble`, as `DescriptorStore` does, writes
   OUT with `save_descriptors`, then deletes the shard folder. Names, descriptors and metadata
   equal a single-process run's, and so does the summary (`ShardPlan.summary`).

The content fingerprint is the run's `chipq.retrieval.describe.images_sha256` (every image's name
and the sha256 of its bytes): the one rule by which chipq decides "same images", here as in a
single-process resume. The driver computes it once for the run's metadata anyway.

Shard files and the manifest are read as hostile input (size caps, exact members and shapes, names
checked against the shard's own slice of the image list); a shard that fails the checks is redone.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chipq.errors import ChipqError, UsageError
from chipq.formats.fileio import atomic_write
from chipq.retrieval.describe import DescribeSummary, FeatureFn, describe_all, images_sha256
from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, assemble, encode, save_descriptors

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "chipq-extract-shards"
MANIFEST_VERSION = 2  # 2: images by content hash (1: size and modification time)
MAX_MANIFEST_BYTES = 1 << 20
MAX_SHARD_BYTES = 1 << 30
DEFAULT_SHARD_SIZE = 64
RAY_INSTALL_HINT = "--workers needs Ray, an optional part of chipq: pip install 'chipq[ray]'"
OBJECT_STORE_BYTES = 256 << 20  # the local cluster's object store: model bytes and shard results


class RayMissing(UsageError):
    """`--workers` or `--ray-address` was given but Ray is not installed."""


class ShardMismatch(ChipqError):
    """A shard folder left by an earlier run belongs to a different run."""


class RayFailed(ChipqError):
    """The Ray cluster could not be started or reached, or a worker failed."""

    exit_code = 1


@dataclass(frozen=True)
class Source:
    """The network that makes the descriptors: a chip blob or a float model, as bytes."""

    kind: str  # "blob" or "model"
    name: str  # file name, as in the metadata label "blob:NAME"
    data: bytes

    @classmethod
    def from_file(cls, kind: str, path: Path) -> "Source":
        try:
            return cls(kind, Path(path).name, Path(path).read_bytes())
        except OSError as exc:
            raise UsageError(f"--{kind} {path}: cannot read ({exc})") from exc

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def shard_dir(out: Path) -> Path:
    """Where a run writing `out` keeps its shards: ``desc.npz`` -> ``desc.shards/``."""
    out = Path(out)
    stem = out.stem if out.suffix.lower() == ".npz" else out.name
    return out.with_name(f"{stem}.shards")


def require_ray():
    """Import Ray, or fail with one line saying how to install it."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise RayMissing(RAY_INSTALL_HINT) from None
    return ray


def list_digest(images: Sequence[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for name, path in images:
        digest.update(f"{name}\0{os.fspath(path)}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def make_manifest(
    images: Sequence[tuple[str, Path]],
    source: Source,
    *,
    kind: DescriptorKind,
    rnip: int | None,
    size: tuple[int, int],
    batch: int,
    shard_size: int,
    metadata: dict,
) -> dict:
    """The manifest of a run (module docstring); two runs may share shards iff these are equal."""
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "source": {"kind": source.kind, "name": source.name, "sha256": source.sha256},
        "settings": {
            "descriptor": DescriptorKind(kind).value,
            "rnip": rnip,
            "size": list(size),
            "batch": batch,
            "shard_size": shard_size,
        },
        "images": {
            "count": len(images),
            "list_sha256": list_digest(images),
            # the run's content hash (`describe.images_sha256`), the same rule a single-process run resumes by
            "content_sha256": metadata.get("images_sha256") or images_sha256([n for n, _ in images], [p for _, p in images]),
        },
        "shards": -(-len(images) // shard_size),
        "metadata": json.loads(json.dumps(metadata, sort_keys=True)),
    }


def _differences(old: dict, new: dict) -> list[str]:
    """Human words for what differs between two manifests."""
    said = []
    labels = [
        (("source", "sha256"), f"{new['source']['kind']} sha256"),
        (("source", "kind"), "model kind"),
        (("settings", "descriptor"), "--descriptor"),
        (("settings", "rnip"), "--rnip"),
        (("settings", "size"), "--size"),
        (("settings", "batch"), "--batch"),
        (("settings", "shard_size"), "--shard-size"),
        (("images", "count"), "number of images"),
        (("images", "list_sha256"), "image list"),
        (("images", "content_sha256"), "image files (content)"),
        (("metadata",), "run metadata"),
    ]
    for keys, label in labels:
        a, b = old, new
        for key in keys:
            a = a.get(key) if isinstance(a, dict) else None
            b = b.get(key) if isinstance(b, dict) else None
        if a != b:
            said.append(label)
    if not said and old != new:
        said.append("manifest")
    return said


def _read_manifest(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ShardMismatch(f"{path}: {size} bytes, more than a manifest may have; delete {path.parent} to start over")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ShardMismatch(f"{path}: unreadable manifest ({exc}); delete {path.parent} to start over") from exc
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ShardMismatch(f"{path}: not a chipq shard manifest; delete {path.parent} to start over")
    if data.get("version") != MANIFEST_VERSION:
        raise ShardMismatch(f"{path}: manifest version {data.get('version')!r}, this chipq writes {MANIFEST_VERSION}")
    return data


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.npz"


# --- shard payloads: what a worker returns and the driver stores -------------------------------


def pack_shard(names: list[str], vectors: np.ndarray, skipped: list[tuple[str, str]]) -> bytes:
    """A shard as .npz bytes: described names, their float32 vectors, skipped names and reasons."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        names=np.array(json.dumps(names)),
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        skipped=np.array(json.dumps([list(item) for item in skipped])),
    )
    return buffer.getvalue()


def unpack_shard(data: bytes, expected: Sequence[str], where: str) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Check and read a shard against the names its slice of the image list holds.

    Raises:
        ShardMismatch: anything but exactly the members `pack_shard` writes, a name outside the
            slice or out of order, a vector count or shape that does not fit.
    """
    if len(data) > MAX_SHARD_BYTES:
        raise ShardMismatch(f"{where}: {len(data)} bytes, cap {MAX_SHARD_BYTES}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = sorted(info.filename for info in archive.infolist())
            if members != ["names.npy", "skipped.npy", "vectors.npy"]:
                raise ShardMismatch(f"{where}: members {members}")
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                names_text, vectors, skipped_text = str(npz["names"]), npz["vectors"], str(npz["skipped"])
        names = json.loads(names_text)
        skipped = [tuple(item) for item in json.loads(skipped_text)]
    except ShardMismatch:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise ShardMismatch(f"{where}: unreadable shard ({exc})") from exc
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ShardMismatch(f"{where}: names are not a list of strings")
    if not all(len(item) == 2 and all(isinstance(s, str) for s in item) for item in skipped):
        raise ShardMismatch(f"{where}: skipped entries are not (name, reason) pairs")
    listed = names + [name for name, _ in skipped]
    if len(set(listed)) != len(listed) or set(listed) != set(expected):
        raise ShardMismatch(f"{where}: its names are not the shard's images")
    order = {name: i for i, name in enumerate(expected)}
    if [order[n] for n in names] != sorted(order[n] for n in names):
        raise ShardMismatch(f"{where}: names out of order")
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != len(names):
        raise ShardMismatch(f"{where}: vectors {vectors.dtype} {vectors.shape} for {len(names)} names")
    if not np.all(np.isfinite(vectors)):
        raise ShardMismatch(f"{where}: vectors contain NaN or infinity")
    return names, vectors, skipped


# --- the worker ----------------------------------------------------------------------------------


class _Collector:
    """The part of `DescriptorStore` that `describe_all` uses, keeping float vectors in memory."""

    def __init__(self, names: list[str]) -> None:
        self.pending = list(names)
        self.resumed = 0
        self.vectors: dict[str, np.ndarray] = {}

    def add(self, name: str, vector: np.ndarray) -> None:
        self.vectors[name] = np.asarray(vector, dtype=np.float32)


LoadFeatures = Callable[[Source, int], FeatureFn]


class ShardDescriber:
    """A Ray Data actor: loads the network once, then describes one shard per row.

    `load_features(source, batch)` turns the model bytes into a feature function; this package
    loads no model itself (`chipq.pipeline.sources.features_from_source` is the one the CLI passes;
    Ray ships it to the workers by reference, so it must be a module-level function).
    """

    def __init__(self, source: Source, sha256: str, rnip: int | None, size: list[int], batch: int, load_features: LoadFeatures) -> None:
        if source.sha256 != sha256:  # the object store handed over other bytes: never describe with them
            raise RuntimeError("model bytes changed on the way to the worker")
        self.features = load_features(source, batch)
        self.rnip = rnip
        self.size = (int(size[0]), int(size[1]))
        self.batch = batch

    def __call__(self, rows: dict) -> dict:
        out = {"shard": [], "payload": []}
        for shard, items_json in zip(rows["shard"], rows["items"]):
            items = [(name, Path(path)) for name, path in json.loads(str(items_json))]
            collector = _Collector([name for name, _ in items])
            summary = describe_all(
                items, self.features, collector, size=self.size, rnip=self.rnip, batch_size=self.batch
            )
            names = [name for name, _ in items if name in collector.vectors]
            vectors = (
                np.stack([collector.vectors[name] for name in names]) if names else np.zeros((0, 0), np.float32)
            )
            out["shard"].append(int(shard))
            out["payload"].append(pack_shard(names, vectors, summary.skipped))
        return {"shard": np.array(out["shard"], dtype=np.int64), "payload": np.array(out["payload"], dtype=object)}


# --- the driver ----------------------------------------------------------------------------------


def _start_ray(workers: int, address: str | None):
    ray = require_ray()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES,
                **kwargs,
            )
    except Exception as exc:  # Ray raises many types (ConnectionError, RuntimeError, ValueError...)
        where = f"at {address}" if address else f"locally with {workers} workers"
        raise RayFailed(f"cannot start or reach a Ray cluster {where} ({type(exc).__name__}: {exc})") from exc
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


ShardResult = tuple[list[str], np.ndarray, list[tuple[str, str]]]  # described names, vectors, skipped


@dataclass
class ShardPlan:
    """A checked distributed run: its settings, its shards, the ones already done, where they go."""

    out: Path
    images: list[tuple[str, Path]]
    source: Source
    kind: DescriptorKind
    rnip: int | None
    size: tuple[int, int]
    batch: int
    metadata: dict
    manifest: dict
    folder: Path
    slices: list[list[tuple[str, Path]]]
    done: dict[int, ShardResult]
    shards_resumed: int = 0  # shards an earlier run left, taken as they are

    @property
    def pending(self) -> list[int]:
        return [i for i in range(len(self.slices)) if i not in self.done]

    def summary(self, described: int) -> DescribeSummary:
        """The run's counts, as a single-process run gives them, `described` of them by this run."""
        skipped = [item for index in sorted(self.done) for item in self.done[index][2]]
        total = sum(len(names) for names, _, _ in self.done.values())
        return DescribeSummary(described=described, resumed=total - described, skipped=skipped)


def plan_shards(
    images: Sequence[tuple[str, Path]],
    out: Path,
    source: Source,
    *,
    kind: DescriptorKind,
    rnip: int | None,
    size: tuple[int, int],
    batch: int,
    metadata: dict,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ShardPlan:
    """Check a run against the shards an earlier one left (refusing another run's) and load them.

    Args:
        images: (name, path) pairs in output order (`chipq.images.list_images`, `image_names`).
        out: the descriptor file to write.
        source: the blob or float model.
        kind, rnip, size, batch: as for a single-process `chipq extract`.
        metadata: the descriptor file's metadata (`chipq.retrieval.describe.run_metadata`).
        shard_size: images per shard (the unit of resumption).

    Raises:
        RayMissing, ShardMismatch, UsageError.
    """
    if shard_size < 1:
        raise UsageError(f"--shard-size {shard_size}: need at least 1")
    kind = DescriptorKind(kind)
    require_ray()
    images = [(name, Path(path).absolute()) for name, path in images]
    manifest = make_manifest(
        images, source, kind=kind, rnip=rnip, size=size, batch=batch, shard_size=shard_size, metadata=metadata
    )
    folder = shard_dir(out)
    slices = [images[i : i + shard_size] for i in range(0, len(images), shard_size)]
    done: dict[int, ShardResult] = {}
    if (folder / MANIFEST).exists():
        previous = _read_manifest(folder / MANIFEST)
        changed = _differences(previous, manifest)
        if changed:
            raise ShardMismatch(
                f"{folder}: shards of a different run ({', '.join(changed)} changed); "
                f"delete {folder} to start over"
            )
        for index, items in enumerate(slices):
            path = shard_path(folder, index)
            if path.exists():
                try:
                    done[index] = unpack_shard(path.read_bytes(), [n for n, _ in items], str(path))
                except (ShardMismatch, OSError):
                    path.unlink(missing_ok=True)  # redo it
    return ShardPlan(Path(out), images, source, kind, rnip, size, batch, metadata, manifest, folder, slices, done, len(done))


def run_shards(
    plan: ShardPlan,
    *,
    workers: int,
    load_features: LoadFeatures,
    ray_address: str | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> int:
    """Describe the pending shards of `plan` on Ray, storing each as it arrives (module docstring).

    Args:
        plan: from `plan_shards`; its `done` receives every shard described.
        workers: actors in the pool (and CPUs of the local cluster when `ray_address` is None).
        load_features: turns the model bytes into a feature function, once per worker (`ShardDescriber`).
        ray_address: an existing cluster ("auto", "ray://host:10001", "host:6379").
        on_shard: called with (images in the shard, shards done) after each shard is stored.

    Returns:
        How many images this run described.

    Raises:
        RayFailed, ShardMismatch, UsageError.
    """
    if workers < 1:
        raise UsageError(f"--workers {workers}: need at least 1")
    if not (plan.folder / MANIFEST).exists():
        plan.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(plan.folder / MANIFEST, json.dumps(plan.manifest, indent=1, sort_keys=True).encode(), what="shard manifest")
    if not plan.pending:
        return 0
    ray = _start_ray(workers, ray_address)
    try:
        import ray.data as rd

        rd.DataContext.get_current().enable_progress_bars = False
        rows = [
            {"shard": index, "items": json.dumps([[name, os.fspath(path)] for name, path in plan.slices[index]])}
            for index in plan.pending
        ]
        dataset = rd.from_items(rows, override_num_blocks=len(rows))
        with warnings.catch_warnings():  # max_restarts=0 goes through Ray's deprecated ray_remote_args
            warnings.simplefilter("ignore")
            results = dataset.map_batches(
                ShardDescriber,
                fn_constructor_kwargs={
                    "source": plan.source,
                    "sha256": plan.source.sha256,
                    "rnip": plan.rnip,
                    "size": list(plan.size),
                    "batch": plan.batch,
                    "load_features": load_features,
                },
                batch_size=1,
                compute=rd.ActorPoolStrategy(size=workers),
                num_cpus=1,
                batch_format="numpy",
                max_restarts=0,  # a failed worker fails the run (resumable) instead of retrying forever
            )
        return _consume(results, plan, on_shard)
    finally:
        ray.shutdown()


def _consume(results, plan: ShardPlan, on_shard) -> int:
    """Check and store each shard as Ray hands it over; the number of images described."""
    described = 0
    rows = iter(results.iter_rows())
    while True:
        try:
            row = next(rows, None)
        except Exception as exc:  # a worker raised: Ray wraps it
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise RayFailed(f"a Ray worker failed ({type(exc).__name__}: {first})") from exc
        if row is None:
            return described
        index = int(row["shard"])
        data = bytes(row["payload"])
        expected = [name for name, _ in plan.slices[index]]
        plan.done[index] = unpack_shard(data, expected, f"shard {index}")
        atomic_write(shard_path(plan.folder, index), data, what="shard")
        described += len(plan.done[index][0])
        if on_shard is not None:
            on_shard(len(expected), len(plan.done))


def write_descriptors(plan: ShardPlan) -> DescriptorSet:
    """Write the descriptor file of a finished run, as `DescriptorStore.finish` would, and remove the shards."""
    vectors: dict[str, np.ndarray] = {}
    for names, block, _ in plan.done.values():
        vectors.update(zip(names, block))
    dims = {vector.shape[-1] for vector in vectors.values()}
    if len(dims) > 1:
        raise ShardMismatch(f"{plan.out}: shards hold descriptors of different lengths {sorted(dims)}")
    codes = {name: encode(vector, plan.kind) for name, vector in vectors.items()}
    dset = assemble([name for name, _ in plan.images], codes, plan.kind, dims.pop() if dims else None, plan.metadata)
    save_descriptors(plan.out, dset)
    remove_shards(plan)
    return dset


def remove_shards(plan: ShardPlan) -> None:
    """Delete the shard folder of a finished (or empty) run: shards, manifest, our stale temp files."""
    folder = plan.folder
    for index in range(len(plan.slices)):
        shard_path(folder, index).unlink(missing_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp"):  # half-written by a killed run (our own temp-file names)
        if stale.name.startswith((".shard-", f".{MANIFEST}.")):
            stale.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else was put there: leave it
