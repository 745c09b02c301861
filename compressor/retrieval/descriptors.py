"""Descriptor kinds, their codes, and the descriptor file (`.npz`), read as a hostile input.

Kinds (D = 512 for VGG-16):

- ``float``: the L2-normalised float32 vector itself, 4·D bytes (2 KB).
- ``byte``: D uint8, ``q = floor((v / max(v))·255 + 0.5)`` in float64, i.e. each element scaled so
  the largest is 255 and rounded half up (an all-zero vector stays zero). NIP/RNIP vectors are
  non-negative (square-root pooling), so this uses all 256 levels; cosine similarity ignores the
  per-descriptor scale. Negative values are refused.
- ``bit``: D bits, bit k is 1 when ``v[k] > median(v)`` (numpy's median: the mean of the two middle
  values for even D), so about half the bits are set whatever the vector's scale. Packed with
  `numpy.packbits`: element k is bit ``7 − k mod 8`` (MSB first) of byte ``k // 8``; unused bits of
  the last byte are 0. ceil(D/8) bytes (64 for D = 512).

File format, version 1: an uncompressed or deflated numpy ``.npz`` (a zip of ``.npy`` members), with
exactly these members, no others:

=================  =====================  ==================================================
member             dtype, shape           meaning
=================  =====================  ==================================================
format_version     integer, ()            1
kind               unicode, ()            "float", "byte" or "bit"
dim                integer, ()            D, 1..MAX_DIM
names              unicode, (N,)          image names, unique, no control characters
descriptors        float32 (N, D) | uint8 (N, D) | uint8 (N, ceil(D/8)), by kind
metadata           unicode, ()            a JSON object (model, rnip, size, chipq version…)
=================  =====================  ==================================================

No member may hold Python objects (the reader never unpickles). The reader checks every member's
header (dtype, shape, caps) before it reads the member's data.
"""

from __future__ import annotations

import json
import os
import time
import unicodedata
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from chipq.errors import ChipqError
from chipq.formats.fileio import FileRefused, atomic_write, open_regular, remove_stale_temps

FILE_VERSION = 1
READABLE_VERSIONS = frozenset({1})
MAX_DESCRIPTORS = 2_000_000  # Flickr1M-sized databases fit; a lying header does not
MAX_DIM = 4096
MAX_NAME_CHARS = 1024
MAX_METADATA_CHARS = 65536
MAX_KIND_CHARS = 16
MAX_NPY_HEADER = 10_000
MAX_MEMBER_BYTES = 1 << 32  # 4 GiB: two million 512-D float descriptors
MEMBERS = ("format_version", "kind", "dim", "names", "descriptors", "metadata")


class DescriptorKind(str, Enum):
    """How a descriptor is stored (module docstring)."""

    FLOAT = "float"
    BYTE = "byte"
    BIT = "bit"


def code_width(kind: DescriptorKind, dim: int) -> int:
    """Elements per stored descriptor: D for float and byte, ceil(D/8) bytes for bit."""
    return (dim + 7) // 8 if kind is DescriptorKind.BIT else dim


def code_dtype(kind: DescriptorKind) -> np.dtype:
    return np.dtype(np.float32) if kind is DescriptorKind.FLOAT else np.dtype(np.uint8)


def encode(vectors: np.ndarray, kind: DescriptorKind) -> np.ndarray:
    """The stored codes of float descriptors.

    Args:
        vectors: (N, D) or (D,) float descriptors.
        kind: the code to make.

    Returns:
        (N, code_width) or (code_width,) array of `code_dtype(kind)`.

    >>> encode(np.array([0.0, 0.1, 0.2, 0.4]), DescriptorKind.BYTE).tolist()
    [0, 64, 128, 255]
    >>> encode(np.array([0.0, 0.1, 0.2, 0.4]), DescriptorKind.BIT).tolist()  # 0011 0000
    [48]
    """
    kind = DescriptorKind(kind)
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[-1] == 0:
        raise ValueError(f"expected (N, D) or (D,) descriptors, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("descriptors contain NaN or infinity")
    if kind is DescriptorKind.FLOAT:
        return v.astype(np.float32)
    if kind is DescriptorKind.BYTE:
        if np.any(v < 0):
            raise ValueError("byte descriptors need non-negative vectors (NIP/RNIP are)")
        peak = v.max(axis=-1, keepdims=True)
        # v / peak first: 255 / peak overflows for subnormal peaks
        ratio = np.divide(v, peak, out=np.zeros_like(v), where=peak > 0)
        return np.floor(ratio * 255.0 + 0.5).astype(np.uint8)
    bits = v > np.median(v, axis=-1, keepdims=True)
    return np.packbits(bits, axis=-1)


class DescriptorError(ChipqError):
    """Root of every descriptor-file failure."""


class DescriptorFileUnreadable(DescriptorError):
    """The file could not be opened or read."""


class NotADescriptorFile(DescriptorError):
    """Not a zip/npz, or its members are not exactly the ones version 1 defines."""


class UnsupportedDescriptorVersion(DescriptorError):
    """format_version is not one this reader lists as readable."""


class DescriptorLimitExceeded(DescriptorError):
    """A member announces more data than the reader's caps allow; refused before reading it."""


class BadDescriptorField(DescriptorError):
    """A member has the wrong dtype or shape, or a value version 1 does not allow."""


class PartialMismatch(DescriptorError):
    """A checkpoint left by an interrupted run belongs to a different run."""


@dataclass(eq=False)
class DescriptorSet:
    """Named descriptors of one kind: `codes` is (N, code_width(kind, dim)) of `code_dtype(kind)`."""

    names: list[str]
    codes: np.ndarray
    kind: DescriptorKind
    dim: int
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked in full (`_check_set`) when written or read, where the message can name the file.
        self.kind = DescriptorKind(self.kind)
        self.names = list(self.names)


def save_descriptors(path: Path, dset: DescriptorSet) -> None:
    """Write a descriptor file atomically (temp file in the same folder, then rename).

    The same set gives the same bytes.
    """
    path = Path(path)
    _check_set(dset, str(path))
    arrays = {
        "format_version": np.array(FILE_VERSION, dtype=np.int64),
        "kind": np.array(dset.kind.value, dtype=str),
        "dim": np.array(dset.dim, dtype=np.int64),
        "names": np.array(dset.names, dtype=str),
        "descriptors": np.ascontiguousarray(dset.codes, dtype=code_dtype(dset.kind)),
        "metadata": np.array(json.dumps(dset.metadata, sort_keys=True), dtype=str),
    }
    try:
        atomic_write(path, lambda handle: np.savez(handle, **arrays), what="descriptor file")
    except FileRefused as exc:
        raise DescriptorFileUnreadable(str(exc)) from None


def load_descriptors(path: Path) -> DescriptorSet:
    """Read a descriptor file, refusing anything version 1 does not define.

    Raises:
        DescriptorError: a subclass naming the member at fault and the values seen.
    """
    path = Path(path)
    try:
        handle = open_regular(path, "descriptor file")
    except FileRefused as exc:
        raise DescriptorFileUnreadable(str(exc)) from None
    with handle:
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile as exc:
            raise NotADescriptorFile(f"{path}: not an .npz descriptor file ({exc})") from exc
        except OSError as exc:
            raise DescriptorFileUnreadable(f"{path}: cannot read ({exc})") from exc
        with archive:
            members = sorted(info.filename for info in archive.infolist())
            if "format_version.npy" in members:  # the version decides which members to expect
                _check_version(path, _read_member(path, archive, "format_version"))
            expected = sorted(f"{name}.npy" for name in MEMBERS)
            if members != expected:  # also catches a name stored twice in the zip
                raise NotADescriptorFile(f"{path}: members {members}, expected {expected}")
            fields = {name: _read_member(path, archive, name) for name in MEMBERS}
    return _from_fields(path, fields)


def _check_version(path: Path, value: np.ndarray) -> None:
    version = int(value)
    if version not in READABLE_VERSIONS:
        raise UnsupportedDescriptorVersion(
            f"{path}: format_version {version}, readable: {sorted(READABLE_VERSIONS)}"
        )


def _read_member(path: Path, archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One member of a descriptor file (`read_npy_member` with this format's header rules)."""
    return read_npy_member(path, archive, name, lambda where, shape, _fortran, dtype: _check_member_header(where, name, shape, dtype))


HeaderCheck = Callable[[str, tuple, bool, np.dtype], None]


def read_npy_member(path: Path, archive: zipfile.ZipFile, name: str, check: HeaderCheck) -> np.ndarray:
    """The one reader of a ``.npy`` member of an ``.npz`` read as hostile input.

    The header is read (capped at `MAX_NPY_HEADER`), `check(where, shape, fortran_order, dtype)`
    refuses what the caller's format does not allow, then the data is refused when it exceeds
    `MAX_MEMBER_BYTES` or the member's size, and exactly the bytes the header announces are read.
    Nothing is unpickled and nothing is allocated before the checks.

    Raises:
        DescriptorError: a subclass naming ``path: name``; whatever `check` raises.
    """
    where = f"{path}: {name}"
    try:
        with archive.open(f"{name}.npy") as f:
            version = npy.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER)
            else:
                raise BadDescriptorField(f"{where}: .npy version {version} not supported")
            check(where, shape, fortran, dtype)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python int: no overflow
            if nbytes > MAX_MEMBER_BYTES:
                raise DescriptorLimitExceeded(f"{where}: {nbytes} bytes, cap {MAX_MEMBER_BYTES}")
            if nbytes > archive.getinfo(f"{name}.npy").file_size:
                raise BadDescriptorField(
                    f"{where}: header announces {nbytes} data bytes, the member holds fewer"
                )
            data = f.read(nbytes)
            if len(data) != nbytes or f.read(1):
                raise BadDescriptorField(f"{where}: {len(data)} data bytes, header announces {nbytes}")
    except ChipqError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        raise NotADescriptorFile(f"{where}: cannot read the .npy member ({exc})") from exc
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.astype(dtype.newbyteorder("="), order="C")


def _check_member_header(where: str, name: str, shape: tuple, dtype: np.dtype) -> None:
    """Dtype family and caps per member, from the header alone (no data read yet)."""
    want_ndim = {"names": 1, "descriptors": 2}.get(name, 0)
    if len(shape) != want_ndim:
        raise BadDescriptorField(f"{where}: shape {shape}, expected {want_ndim} dimensions")
    if name in ("format_version", "dim"):
        if dtype.kind not in "iu":
            raise BadDescriptorField(f"{where}: dtype {dtype}, expected an integer")
    elif name == "descriptors":
        if dtype.kind != "f" and dtype.kind != "u":
            raise BadDescriptorField(f"{where}: dtype {dtype}, expected float32 or uint8")
        rows, cols = shape
        if rows > MAX_DESCRIPTORS or cols > MAX_DIM:
            raise DescriptorLimitExceeded(
                f"{where}: shape {shape} over the caps ({MAX_DESCRIPTORS} descriptors, {MAX_DIM} elements)"
            )
    else:
        if dtype.kind != "U":
            raise BadDescriptorField(f"{where}: dtype {dtype}, expected a unicode string")
        chars = dtype.itemsize // 4
        cap = {"kind": MAX_KIND_CHARS, "names": MAX_NAME_CHARS, "metadata": MAX_METADATA_CHARS}[name]
        if chars > cap:
            raise DescriptorLimitExceeded(f"{where}: strings of {chars} characters, cap {cap}")
        if name == "names" and shape[0] > MAX_DESCRIPTORS:
            raise DescriptorLimitExceeded(f"{where}: {shape[0]} names, cap {MAX_DESCRIPTORS}")
    if dtype.itemsize > 8 and dtype.kind != "U":
        raise BadDescriptorField(f"{where}: dtype {dtype} is wider than 8 bytes")


def _from_fields(path: Path, fields: dict[str, np.ndarray]) -> DescriptorSet:
    kind_text = str(fields["kind"])
    try:
        kind = DescriptorKind(kind_text)
    except ValueError:
        raise BadDescriptorField(
            f"{path}: kind {kind_text!r}, expected one of {[k.value for k in DescriptorKind]}"
        ) from None
    try:
        metadata = json.loads(str(fields["metadata"]))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadDescriptorField(f"{path}: metadata is not JSON ({exc})") from exc
    names = [str(name) for name in fields["names"]]
    dset = DescriptorSet(names, fields["descriptors"], kind, int(fields["dim"]), metadata)
    _check_set(dset, str(path))
    return dset


def _check_set(dset: DescriptorSet, where: str) -> None:
    """Every rule of the module docstring that relates members to each other."""
    kind, dim, codes = dset.kind, dset.dim, dset.codes
    if not isinstance(dset.metadata, dict):
        got = type(dset.metadata).__name__
        raise BadDescriptorField(f"{where}: metadata must be a JSON object, got {got}")
    if not 1 <= dim <= MAX_DIM:
        raise BadDescriptorField(f"{where}: dim {dim} not in 1..{MAX_DIM}")
    want = (len(dset.names), code_width(kind, dim))
    if not isinstance(codes, np.ndarray) or codes.shape != want or codes.dtype != code_dtype(kind):
        raise BadDescriptorField(
            f"{where}: descriptors {getattr(codes, 'dtype', '?')} {getattr(codes, 'shape', '?')}, "
            f"expected {code_dtype(kind)} {want} for {len(dset.names)} {kind.value} descriptors of dim {dim}"
        )
    if kind is DescriptorKind.FLOAT and not np.all(np.isfinite(codes)):
        raise BadDescriptorField(f"{where}: float descriptors contain NaN or infinity")
    if kind is DescriptorKind.BIT and dim % 8 and np.any(codes[:, -1] & ((1 << (8 - dim % 8)) - 1)):
        raise BadDescriptorField(f"{where}: unused bits of the last byte are not 0 (dim {dim})")
    seen = set()
    for index, name in enumerate(dset.names):
        if name_problem(name):
            raise BadDescriptorField(
                f"{where}: name {index} {name[:80]!r} is empty, too long or has control characters"
            )
        if name in seen:
            raise BadDescriptorField(f"{where}: name {name[:80]!r} appears twice")
        seen.add(name)


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an image name of a descriptor file, or None when it can.

    Names are stored as text and shown on terminals and pages: no control characters, at most
    `MAX_NAME_CHARS`, and valid Unicode (a file name that is not UTF-8 arrives with surrogates).
    """
    if not name:
        return "empty name"
    if len(name) > MAX_NAME_CHARS:
        return f"name longer than {MAX_NAME_CHARS} characters"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return "name has control characters or is not valid UTF-8"
    return None


def assemble(
    order: Sequence[str], codes: Mapping[str, np.ndarray], kind: DescriptorKind, dim: int | None, metadata: dict
) -> DescriptorSet:
    """The descriptor set of a run: the codes of the names in `order` that have one, in that order.

    What `DescriptorStore` and the Ray driver (`chipq.retrieval.distributed`) both write, so a run
    gives the same file however it ran. `dim` None (nothing described) is stored as 1.
    """
    kind = DescriptorKind(kind)
    names = [name for name in order if name in codes]
    dim = dim if dim is not None else 1
    stacked = (
        np.stack([codes[name] for name in names]) if names else np.zeros((0, code_width(kind, dim)), dtype=code_dtype(kind))
    )
    return DescriptorSet(names, stacked, kind, dim, json.loads(json.dumps(metadata, sort_keys=True)))


def partial_path(out: Path) -> Path:
    """Where a run writing `out` keeps its checkpoint: ``desc.npz`` -> ``desc.partial.npz``."""
    out = Path(out)
    stem = out.stem if out.suffix.lower() == ".npz" else out.name
    return out.with_name(f"{stem}.partial.npz")


class DescriptorStore:
    """The descriptors of a run in progress, checkpointed so an interrupted run can resume.

    Every `checkpoint_every` added descriptors, and at the first one added `checkpoint_seconds`
    after the last checkpoint, the store rewrites `partial_path(out)` atomically. A new store for
    the same `out` reloads that checkpoint if its kind and metadata equal this run's and every name
    in it is in `order`, and refuses it (`PartialMismatch`, naming the fields that differ)
    otherwise. The metadata is what identifies a run: callers put in it the content hashes of the
    model and the images and every setting, so a changed file is never resumed (see
    `chipq.retrieval.describe.run_metadata`); the
    names it holds are left out of `pending`. `finish` writes `out` with the descriptors in `order`
    order and deletes the checkpoint, so a resumed run gives the same file, byte for byte, as an
    uninterrupted one. Each checkpoint rewrites everything so far: for very large runs choose a
    large `checkpoint_every`.
    """

    def __init__(
        self,
        out: Path,
        order: list[str],
        *,
        kind: DescriptorKind,
        metadata: dict,
        checkpoint_every: int = 100,
        checkpoint_seconds: float = 30.0,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
        if len(set(order)) != len(order):
            raise ValueError("the image names of a run must be unique")
        self.out = Path(out)
        self.partial = partial_path(self.out)
        self.order = list(order)
        self.kind = DescriptorKind(kind)
        # Round-trip through JSON so a reloaded checkpoint compares equal (tuples become lists).
        self.metadata = json.loads(json.dumps(metadata, sort_keys=True))
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self._last_checkpoint = time.monotonic()
        self.dim: int | None = None
        self._codes: dict[str, np.ndarray] = {}
        self._since_checkpoint = 0
        self.resumed = 0
        if os.path.lexists(self.partial):
            self._resume()

    def _resume(self) -> None:
        previous = load_descriptors(self.partial)
        if previous.kind is not self.kind or previous.metadata != self.metadata:
            differ = [] if previous.kind is self.kind else ["descriptor kind"]
            keys = sorted(set(previous.metadata) | set(self.metadata))
            differ += [key for key in keys if previous.metadata.get(key) != self.metadata.get(key)]
            raise PartialMismatch(
                f"{self.partial}: checkpoint of a different run ({', '.join(differ)} differ: "
                "another model, other images or other settings); delete it to start over"
            )
        wanted = set(self.order)
        stray = [name for name in previous.names if name not in wanted]
        if stray:
            raise PartialMismatch(
                f"{self.partial}: checkpoint holds {len(stray)} images not in this run "
                f"(first {stray[0]!r}); delete it to start over"
            )
        self.dim = previous.dim
        self._codes = dict(zip(previous.names, previous.codes))
        self.resumed = len(self._codes)

    @property
    def pending(self) -> list[str]:
        """Names in `order` without a descriptor yet."""
        return [name for name in self.order if name not in self._codes]

    def __len__(self) -> int:
        return len(self._codes)

    def add(self, name: str, vector: np.ndarray) -> None:
        """Store the float descriptor of `name` (encoded to the run's kind); checkpoint when due."""
        if name not in self.order:
            raise ValueError(f"{name!r} is not one of this run's images")
        vector = np.asarray(vector)
        if self.dim is None:
            self.dim = int(vector.shape[-1])
        if vector.shape != (self.dim,):
            raise ValueError(f"{name!r}: descriptor shape {vector.shape}, expected ({self.dim},)")
        self._codes[name] = encode(vector, self.kind)
        self._since_checkpoint += 1
        due = time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds
        if self._since_checkpoint >= self.checkpoint_every or due:
            self.checkpoint()

    def snapshot(self) -> DescriptorSet:
        """Everything stored so far, in `order` order."""
        return assemble(self.order, self._codes, self.kind, self.dim, self.metadata)

    def checkpoint(self) -> None:
        """Write the checkpoint now."""
        save_descriptors(self.partial, self.snapshot())
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def finish(self) -> DescriptorSet:
        """Write `out`, delete the checkpoint, and return what was written."""
        dset = self.snapshot()
        save_descriptors(self.out, dset)
        self.partial.unlink(missing_ok=True)
        remove_stale_temps(self.partial)  # a checkpoint write that a kill -9 cut short
        return dset
