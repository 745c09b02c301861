"""Search index over a descriptor file: exact or approximate nearest neighbours on faiss.

Metrics (the same as `chipq.retrieval.scoring`):

- float and byte descriptors: cosine similarity, as the inner product of L2-normalised float32
  vectors (`faiss.IndexFlatIP`; an all-zero vector stays zero and scores 0 against everything).
- bit descriptors: Hamming distance on the packed codes (`faiss.IndexBinaryFlat`), reported as the
  score ``1 − 2·hamming/D`` with the distance beside it.

Methods: ``flat`` (exact, every descriptor scanned) and ``ivf`` (approximate, float and byte only:
an inverted file of `nlist` k-means cells of the normalised vectors, `nprobe` cells visited per
query; `faiss.IndexIVFFlat`, inner product). Results are ordered by score, ties by database order.

Index file, version 1 — chipq's own numpy ``.npz``, never a faiss file: faiss's own reader
(`faiss.read_index`) parses a C++ structure from the bytes, and a hostile file could make it
allocate or read out of bounds; here every member's header is checked against caps before its
data is read, no member holds Python objects, and the faiss structures are built from the
checked arrays on load. Members:

=================  =====================  ==================================================
member             dtype, shape           meaning
=================  =====================  ==================================================
format_version     integer, ()            the descriptor file's version (1)
kind, dim, names,  as in a descriptor      the descriptors indexed, with their metadata (model,
descriptors,       file (chipq.            RNIP, input size, model sha256), checked by the same
metadata           descriptors)            reader as a descriptor file
index              unicode, ()            JSON {"version": 1, "method": "flat"|"ivf",
                                          "nlist": n, "nprobe": p}
centroids          float32 (nlist, D)     ivf only: the cells' centres (unit vectors)
assign             int32 (N,)             ivf only: the cell of every descriptor
=================  =====================  ==================================================

Building the ivf index clusters a sample of at most 256·nlist descriptors (faiss k-means, fixed
seed); loading it adds each descriptor to its stored cell, so a load costs one copy of the vectors.

`PositiveRanker` is what `chipq.retrieval.scoring.evaluate` ranks with: for each query it asks the
exact index for the descriptors that score at least as well as the query's worst positive
(`range_search`), rescores those exactly (float64, the scoring module's formula), and counts.
Memory per block of queries grows with the database size N, never with N².
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chipq.errors import ChipqError, UsageError
from chipq.formats import constants as C
from chipq.formats.fileio import FileRefused, atomic_write, open_regular
from chipq.retrieval.descriptors import (
    MEMBERS,
    DescriptorFileUnreadable,
    DescriptorKind,
    DescriptorSet,
    NotADescriptorFile,
    _check_set,
    _check_version,
    _from_fields,
    _read_member,
    read_npy_member,
)

if TYPE_CHECKING:
    from chipq.retrieval.describe import FeatureFn


class IndexMethod(str, Enum):
    """How an index searches (module docstring)."""

    FLAT = "flat"
    IVF = "ivf"


INDEX_VERSION = 1
METHODS = tuple(method.value for method in IndexMethod)
INDEX_MEMBERS = (*MEMBERS, "index")
IVF_MEMBERS = ("centroids", "assign")
MAX_NLIST = 1 << 16
MAX_INDEX_JSON = 4096
FAISS_INSTALL_HINT = "needs faiss, an optional part of chipq: pip install 'chipq[index]'"
RANGE_MARGIN = 1e-4  # float32 cosine error bound used to widen the candidate search (|error| < 1e-5)


class IndexError_(ChipqError):
    """An index file cannot be used (named with a trailing underscore: `IndexError` is a builtin)."""


class NotAnIndex(IndexError_):
    """The file is a descriptor file, not an index (`load_searchable` indexes it on the fly)."""


class FaissMissing(UsageError):
    """A command needs faiss and it is not installed."""


def require_faiss():
    try:
        import faiss
    except ImportError:
        raise FaissMissing(f"this command {FAISS_INSTALL_HINT}") from None
    return faiss


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


UNIT_BLOCK_ROWS = 4096  # rows normalised at a time: the float64 work copy stays ~ tens of MB


def unit_float32(codes: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows of float or byte codes (all-zero rows stay zero).

    Each row is normalised in float64 and rounded once to float32, a block of rows at a time, so
    the memory needed beyond `codes` is the float32 result (one float64 copy of a 100k x 512 set
    would add 400 MB twice).
    """
    codes = np.atleast_2d(np.asarray(codes))
    out = np.zeros(codes.shape, dtype=np.float32)
    for start in range(0, len(codes), UNIT_BLOCK_ROWS):
        v = codes[start : start + UNIT_BLOCK_ROWS].astype(np.float64)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        out[start : start + UNIT_BLOCK_ROWS] = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return out


def default_nlist(n: int) -> int:
    """About 4·sqrt(N) cells, and at least 39 descriptors per cell (faiss's k-means minimum)."""
    return int(max(1, min(round(4 * np.sqrt(n)), n // 39)))


@dataclass(eq=False)
class SearchIndex:
    """Descriptors plus how to search them; the faiss structure is built on first use."""

    dset: DescriptorSet
    method: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    centroids: np.ndarray | None = None
    assign: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._faiss = None

    @property
    def kind(self) -> DescriptorKind:
        return self.dset.kind

    def __len__(self) -> int:
        return len(self.dset.names)

    def faiss_index(self):
        """The faiss structure (built once)."""
        if self._faiss is None:
            self._faiss = _build_faiss(self)
        return self._faiss

    def search(self, codes: np.ndarray, k: int, *, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query code: (scores float64 (Q, k'), ids int64 (Q, k')), k' = min(k, N).

        Scores as in the module docstring; each row is ordered by score, ties by database order.
        """
        if k < 1:
            raise UsageError(f"-k {k}: need at least 1")
        k = min(k, len(self))
        queries = self._query_array(codes)
        index = self.faiss_index()
        if self.method == "ivf":
            index.nprobe = int(nprobe or self.nprobe or 1)
        elif nprobe is not None:
            raise UsageError("--nprobe applies to an ivf index only")
        if k == 0:
            return np.zeros((len(queries), 0)), np.zeros((len(queries), 0), dtype=np.int64)
        # Ask for a few more than k so that ties at the k-th place can be put in database order.
        extra = min(len(self), k + 16)
        dist, ids = index.search(queries, extra)
        scores = self._scores(dist)
        out_s = np.full((len(queries), k), np.nan)
        out_i = np.full((len(queries), k), -1, dtype=np.int64)
        for row in range(len(queries)):
            valid = ids[row] >= 0
            s, i = scores[row][valid], ids[row][valid].astype(np.int64)
            order = np.lexsort((i, -s))[:k]
            out_s[row, : len(order)] = s[order]
            out_i[row, : len(order)] = i[order]
        return out_s, out_i

    def _query_array(self, codes: np.ndarray) -> np.ndarray:
        codes = np.atleast_2d(np.asarray(codes))
        from chipq.retrieval.descriptors import code_dtype, code_width

        width = code_width(self.kind, self.dset.dim)
        if codes.shape[1] != width or codes.dtype != code_dtype(self.kind):
            raise UsageError(
                f"query codes {codes.dtype} {codes.shape[1:]} do not fit this index "
                f"({self.kind.value} descriptors of dim {self.dset.dim})"
            )
        if self.kind is DescriptorKind.BIT:
            return np.ascontiguousarray(codes, dtype=np.uint8)
        return unit_float32(codes)

    def _scores(self, dist: np.ndarray) -> np.ndarray:
        if self.kind is DescriptorKind.BIT:
            return 1.0 - 2.0 * dist.astype(np.float64) / self.dset.dim
        return dist.astype(np.float64)

    def hamming(self, scores: np.ndarray) -> np.ndarray:
        """Hamming distances back from bit scores."""
        return np.rint((1.0 - scores) * self.dset.dim / 2).astype(np.int64)


def build_index(
    dset: DescriptorSet,
    method: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 1234,
) -> SearchIndex:
    """An index over `dset` (module docstring). ivf clusters the normalised vectors with faiss."""
    if method not in METHODS:
        raise UsageError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "flat":
        if nlist is not None or nprobe is not None:
            raise UsageError("--nlist and --nprobe apply to --method ivf only")
        return SearchIndex(dset, "flat")
    if dset.kind is DescriptorKind.BIT:
        raise UsageError("--method ivf works on float and byte descriptors; bit descriptors use the exact Hamming index")
    faiss = require_faiss()
    n = len(dset.names)
    nlist = default_nlist(n) if nlist is None else nlist
    if not 1 <= nlist <= min(n, MAX_NLIST):
        raise UsageError(f"--nlist {nlist}: need 1..{min(n, MAX_NLIST)} for {n} descriptors")
    nprobe = max(1, nlist // 16) if nprobe is None else nprobe
    if not 1 <= nprobe <= nlist:
        raise UsageError(f"--nprobe {nprobe}: need 1..{nlist}")
    vectors = unit_float32(dset.codes)
    rng = np.random.default_rng(seed)
    sample = vectors if n <= 256 * nlist else vectors[np.sort(rng.choice(n, 256 * nlist, replace=False))]
    kmeans = faiss.Kmeans(dset.dim, nlist, niter=20, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1)
    kmeans.train(sample)
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    quantizer = faiss.IndexFlatIP(dset.dim)
    quantizer.add(centroids)
    _, cells = quantizer.search(vectors, 1)
    return SearchIndex(dset, "ivf", nlist, nprobe, centroids, cells[:, 0].astype(np.int32))


def _build_faiss(index: SearchIndex):
    faiss = require_faiss()
    dset = index.dset
    if dset.kind is DescriptorKind.BIT:
        flat = faiss.IndexBinaryFlat(8 * dset.codes.shape[1])
        flat.add(np.ascontiguousarray(dset.codes, dtype=np.uint8))
        return flat
    vectors = unit_float32(dset.codes)
    if index.method == "flat":
        flat = faiss.IndexFlatIP(dset.dim)
        flat.add(vectors)
        return flat
    quantizer = faiss.IndexFlatIP(dset.dim)
    quantizer.add(index.centroids)
    ivf = faiss.IndexIVFFlat(quantizer, dset.dim, index.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True
    # Each descriptor goes to its stored cell: no assignment pass over N x nlist on load.
    order = np.argsort(index.assign, kind="stable")
    bounds = np.searchsorted(index.assign[order], np.arange(index.nlist + 1))
    for cell in range(index.nlist):
        members = order[bounds[cell] : bounds[cell + 1]]
        if len(members):
            ids = np.ascontiguousarray(members, dtype=np.int64)
            codes = np.ascontiguousarray(vectors[members])
            ivf.invlists.add_entries(cell, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(codes.view(np.uint8)))
    ivf.ntotal = len(vectors)
    ivf.quantizer_trains_alone = 0
    ivf.own_fields = False
    index._quantizer = quantizer  # keep it alive as long as the ivf index
    return ivf


# --- the index file --------------------------------------------------------------------------------


def save_index(path: Path, index: SearchIndex) -> None:
    """Write an index file atomically (module docstring)."""
    path = Path(path)
    dset = index.dset
    _check_set(dset, str(path))
    info = {"version": INDEX_VERSION, "method": index.method, "nlist": index.nlist, "nprobe": index.nprobe}
    from chipq.retrieval.descriptors import code_dtype

    arrays = {
        "format_version": np.array(1, dtype=np.int64),
        "kind": np.array(dset.kind.value, dtype=str),
        "dim": np.array(dset.dim, dtype=np.int64),
        "names": np.array(dset.names, dtype=str),
        "descriptors": np.ascontiguousarray(dset.codes, dtype=code_dtype(dset.kind)),
        "metadata": np.array(json.dumps(dset.metadata, sort_keys=True), dtype=str),
        "index": np.array(json.dumps(info, sort_keys=True), dtype=str),
    }
    if index.method == "ivf":
        arrays["centroids"] = np.ascontiguousarray(index.centroids, dtype=np.float32)
        arrays["assign"] = np.ascontiguousarray(index.assign, dtype=np.int32)
    atomic_write(path, lambda f: np.savez(f, **arrays), what="index file")


def load_index(path: Path) -> SearchIndex:
    """Read an index file as hostile input (module docstring).

    Raises:
        IndexError_ or a `DescriptorError`: naming the member at fault.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(open_regular(path, "index file"))
    except FileRefused as exc:
        raise DescriptorFileUnreadable(str(exc)) from None
    except FileNotFoundError as exc:
        raise DescriptorFileUnreadable(f"{path}: no such file") from exc
    except zipfile.BadZipFile as exc:
        raise NotADescriptorFile(f"{path}: not a chipq index file ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise DescriptorFileUnreadable(f"{path}: cannot read ({exc})") from exc
    with archive:
        members = sorted(info.filename for info in archive.infolist())
        base = sorted(f"{name}.npy" for name in INDEX_MEMBERS)
        with_ivf = sorted(base + [f"{name}.npy" for name in IVF_MEMBERS])
        if members == sorted(f"{name}.npy" for name in MEMBERS):
            raise NotAnIndex(f"{path}: a descriptor file, not an index; make one with `chipq index {path} -o INDEX`")
        if members not in (base, with_ivf):
            raise IndexError_(f"{path}: members {members[:12]}, expected {base} (+ {list(IVF_MEMBERS)} for ivf)")
        _check_version(path, _read_member(path, archive, "format_version"))
        fields = {name: _read_member(path, archive, name) for name in MEMBERS}
        dset = _from_fields(path, fields)
        info = _read_info(path, archive)
        centroids = assign = None
        if info["method"] == "ivf":
            if members != with_ivf:
                raise IndexError_(f"{path}: an ivf index without its centroids and assignments")
            centroids = _read_array(path, archive, "centroids", np.float32, (info["nlist"], dset.dim))
            assign = _read_array(path, archive, "assign", np.int32, (len(dset.names),))
        elif members != base:
            raise IndexError_(f"{path}: a flat index with ivf members")
    if info["method"] == "ivf":
        if dset.kind is DescriptorKind.BIT:
            raise IndexError_(f"{path}: an ivf index of bit descriptors (not something chipq writes)")
        if not np.all(np.isfinite(centroids)):
            raise IndexError_(f"{path}: centroids contain NaN or infinity")
        if len(assign) and (assign.min() < 0 or assign.max() >= info["nlist"]):
            raise IndexError_(f"{path}: a cell number outside 0..{info['nlist'] - 1}")
    return SearchIndex(dset, info["method"], info["nlist"], info["nprobe"], centroids, assign)


def _read_info(path: Path, archive: zipfile.ZipFile) -> dict:
    raw = _read_array(path, archive, "index", None, ())
    try:
        info = json.loads(str(raw))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise IndexError_(f"{path}: index member is not JSON ({exc})") from exc
    if not isinstance(info, dict) or info.get("version") != INDEX_VERSION:
        raise IndexError_(f"{path}: index version {info.get('version') if isinstance(info, dict) else info!r}, readable: [{INDEX_VERSION}]")
    method = info.get("method")
    if method not in METHODS:
        raise IndexError_(f"{path}: index method {method!r}, expected one of {list(METHODS)}")
    if method == "flat":
        if info.get("nlist") is not None or info.get("nprobe") is not None:
            raise IndexError_(f"{path}: a flat index with nlist/nprobe")
        return {"method": "flat", "nlist": None, "nprobe": None}
    nlist, nprobe = info.get("nlist"), info.get("nprobe")
    if not (isinstance(nlist, int) and 1 <= nlist <= MAX_NLIST):
        raise IndexError_(f"{path}: nlist {nlist!r} not in 1..{MAX_NLIST}")
    if not (isinstance(nprobe, int) and 1 <= nprobe <= nlist):
        raise IndexError_(f"{path}: nprobe {nprobe!r} not in 1..{nlist}")
    return {"method": "ivf", "nlist": nlist, "nprobe": nprobe}


def _read_array(path: Path, archive: zipfile.ZipFile, name: str, dtype, shape: tuple) -> np.ndarray:
    """One extra member: header must announce exactly `dtype` (None: a short unicode string) and `shape`."""

    def check(where: str, got_shape: tuple, fortran: bool, got_dtype: np.dtype) -> None:
        if dtype is None:
            ok = got_dtype.kind == "U" and got_dtype.itemsize // 4 <= MAX_INDEX_JSON and got_shape == ()
        else:
            ok = got_dtype.newbyteorder("=") == np.dtype(dtype).newbyteorder("=") and tuple(got_shape) == tuple(shape)
        if not ok or fortran:
            want = "a unicode string" if dtype is None else f"{np.dtype(dtype)} {tuple(shape)}"
            raise IndexError_(f"{where}: {got_dtype} {tuple(got_shape)}, expected {want}")

    return read_npy_member(path, archive, name, check)


def load_searchable(path: Path) -> SearchIndex:
    """An index file, or a descriptor file indexed flat on the fly."""
    from chipq.retrieval.descriptors import load_descriptors

    try:
        return load_index(path)
    except NotAnIndex:
        return SearchIndex(load_descriptors(path), "flat")


# --- exact ranks for evaluation ------------------------------------------------------------------


class PositiveRanker:
    """Exact 0-based ranks of a query's positives among the database, without N×N scores.

    Equal to ranking every database descriptor by the scoring module's score with a stable sort
    (ties in database order): the rank of positive p is the number of database descriptors other
    than the query that score higher than p, or the same and come before it.
    """

    def __init__(self, dset: DescriptorSet, in_db: np.ndarray, *, use_faiss: bool | None = None) -> None:
        self.dset = dset
        self.in_db = np.asarray(in_db, dtype=bool)
        self.use_faiss = have_faiss() if use_faiss is None else use_faiss
        self._index = SearchIndex(dset, "flat") if self.use_faiss else None

    def exact_scores(self, row: int, ids: np.ndarray) -> np.ndarray:
        """Score of descriptor `row` against `ids`, per pair (the same value whatever `ids` holds)."""
        from chipq.retrieval.scoring import _POPCOUNT, _unit

        codes = self.dset.codes
        if self.dset.kind is DescriptorKind.BIT:
            hamming = _POPCOUNT[codes[ids] ^ codes[row]].sum(axis=1)
            return 1.0 - 2.0 * hamming / self.dset.dim
        q = _unit(codes[row : row + 1])[0]
        return (_unit(codes[ids]) * q).sum(axis=1)

    def ranks(self, rows: list[int], positives: list[list[int]], *, block_bytes: int) -> list[list[int]]:
        """For each query row, the ranks of its positives that are in the database (others left out)."""
        out: list[list[int]] = []
        n = len(self.dset.names)
        block = max(1, block_bytes // (16 * max(1, n)))
        for start in range(0, len(rows), block):
            chunk_rows = rows[start : start + block]
            chunk_pos = positives[start : start + block]
            ranked = [
                [p for p in pos if p != row and self.in_db[p]] for row, pos in zip(chunk_rows, chunk_pos)
            ]
            pos_scores = [self.exact_scores(row, np.array(pos, dtype=np.int64)) for row, pos in zip(chunk_rows, ranked)]
            candidates = self._candidates(chunk_rows, pos_scores, block_bytes)
            for row, pos, ps, cand in zip(chunk_rows, ranked, pos_scores, candidates):
                if not pos:
                    out.append([])
                    continue
                cand = cand[(cand != row) & self.in_db[cand]]
                cs = self.exact_scores(row, cand)
                ranks = []
                for p, s in zip(pos, ps):
                    ranks.append(int(np.count_nonzero(cs > s) + np.count_nonzero((cs == s) & (cand < p))))
                out.append(ranks)
        return out

    def _candidates(self, rows: list[int], pos_scores: list[np.ndarray], block_bytes: int) -> list[np.ndarray]:
        """Per query, a superset of the descriptors scoring at least its worst positive's score."""
        n = len(self.dset.names)
        lowest = [float(ps.min()) if len(ps) else None for ps in pos_scores]
        if self._index is None:  # numpy: exact scores of the whole database, in bounded chunks
            out = []
            step = max(1, block_bytes // (8 * self.dset.codes.shape[1] + 8))
            for row, low in zip(rows, lowest):
                if low is None:
                    out.append(np.zeros(0, dtype=np.int64))
                    continue
                kept = []
                for start in range(0, n, step):
                    ids = np.arange(start, min(n, start + step))
                    kept.append(ids[self.exact_scores(row, ids) >= low])
                out.append(np.concatenate(kept))
            return out
        index = self._index.faiss_index()
        live = [i for i, low in enumerate(lowest) if low is not None]
        out = [np.zeros(0, dtype=np.int64) for _ in rows]
        if not live:
            return out
        queries = self._index._query_array(self.dset.codes[[rows[i] for i in live]])
        if self.dset.kind is DescriptorKind.BIT:
            # score >= low  <=>  hamming <= (1 - low)·D/2 ; faiss keeps distances < radius
            radius = [int(np.floor((1.0 - lowest[i]) * self.dset.dim / 2 + 1e-9)) + 1 for i in live]
            for j, i in enumerate(live):
                lims, _, ids = index.range_search(queries[j : j + 1], radius[j])
                out[i] = ids[lims[0] : lims[1]].astype(np.int64)
            return out
        for j, i in enumerate(live):  # faiss keeps inner products > radius
            lims, _, ids = index.range_search(queries[j : j + 1], lowest[i] - RANGE_MARGIN)
            out[i] = ids[lims[0] : lims[1]].astype(np.int64)
        return out


def recall_at(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k."""
    hits = [len(set(a[:k][a[:k] >= 0]) & set(e[:k][e[:k] >= 0])) / max(1, min(k, int((e[:k] >= 0).sum()))) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits)) if hits else 0.0


# --- queries ---------------------------------------------------------------------------------------


@dataclass
class Query:
    """One query: its name, its code in the index's kind, and its image file when it has one."""

    name: str
    code: np.ndarray
    image: Path | None = None


class QueryMismatch(ChipqError):
    """A query was made by another model or with other settings than the index."""


def query_settings(index: SearchIndex) -> tuple[int | None, tuple[int, int]]:
    """The RNIP count and input (height, width) the index's descriptors were made with.

    Query images are described with these, so their descriptors compare with the index's.

    Raises:
        QueryMismatch: the metadata holds no usable values (not a file `chipq extract` wrote).
    """
    meta = index.dset.metadata
    rnip = meta.get("rnip")
    size = meta.get("size")
    # a number read from a file is checked as the same number given as an option (`--input`): whole
    # numbers (not booleans) within the format's input cap; the network's own limits are the caller's
    sides_ok = isinstance(size, list) and len(size) == 2 and all(type(v) is int and 1 <= v <= C.MAX_INPUT_SIDE for v in size)
    if rnip not in (None, 5, 9, 14) or not sides_ok:
        raise QueryMismatch(f"the index's metadata has no usable rnip/size ({rnip!r}, {size!r})")
    return rnip, (size[0], size[1])


def image_queries(index: SearchIndex, images: list[Path], features: FeatureFn, *, batch: int = 8) -> list[Query]:
    """Describe query images with `features` and the index's own settings (`query_settings`), encoded.

    `features` must be the network that made the index: the caller checks it (by content).
    """
    from chipq.images import load_image
    from chipq.retrieval.describe import describe
    from chipq.retrieval.descriptors import encode

    rnip, size = query_settings(index)
    queries = []
    for image in images:
        vector = describe(load_image(image), features, size=size, rnip=rnip, batch_size=batch)
        if len(vector) != index.dset.dim:
            raise QueryMismatch(f"{image}: descriptor of dim {len(vector)}, the index holds dim {index.dset.dim}")
        queries.append(Query(Path(image).name, encode(vector, index.kind), Path(image)))
    return queries


def descriptor_queries(index: SearchIndex, path: Path) -> list[Query]:
    """Every descriptor of a descriptor file, as queries (same kind, dim and settings as the index)."""
    from chipq.retrieval.descriptors import load_descriptors

    dset = load_descriptors(path)
    if dset.kind is not index.kind or dset.dim != index.dset.dim:
        raise QueryMismatch(
            f"{path}: {dset.kind.value} descriptors of dim {dset.dim}, the index holds "
            f"{index.kind.value} descriptors of dim {index.dset.dim}"
        )
    for key in ("blob_sha256", "model_sha256", "rnip", "size"):
        if key in index.dset.metadata and dset.metadata.get(key) != index.dset.metadata.get(key):
            raise QueryMismatch(
                f"{path}: made with {key} {dset.metadata.get(key)!r}, the index with {index.dset.metadata.get(key)!r}"
            )
    return [Query(name, code) for name, code in zip(dset.names, dset.codes)]
