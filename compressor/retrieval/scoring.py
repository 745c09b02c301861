"""Retrieval scoring: similarities, rankings, average precision (INRIA Holidays protocol), mAP.

Protocol (the official ``holidays_map.py`` rules):

- Each query is ranked against the database: every described image except the query itself (with
  ``exclude_queries``, also without the ground truth's other queries, unless they are positives).
  Scores: cosine similarity for float and byte descriptors, ``1 − 2·hamming/D`` for bit
  descriptors (the cosine of the ±1 vectors). Higher ranks first; ties keep the descriptor file's
  order.
- AP = (1/N) Σ_i ½·(P_L + P_R) over the positives in rank order, i from 0, with r_i the 0-based
  rank of the i-th positive, P_L = i / r_i (1 when r_i = 0) and P_R = (i + 1) / (r_i + 1). N counts
  every positive of the ground truth, so a positive that is never returned (not in the descriptor
  file) adds 0. mAP is the mean AP over the evaluated queries.
- Ground-truth names are matched to descriptor names exactly, or else by file name (the last path
  component) when exactly one descriptor has that file name.
- A query with no descriptor is an error (`MissingQueries`); a query with no positive is left out
  of the mAP and reported.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from chipq.errors import ChipqError
from chipq.formats.fileio import FileRefused, read_regular
from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet

GroundTruth = dict[str, list[str]]  # query name -> positive names

MAX_GT_BYTES = 64 << 20
SCORE_CHUNK_BYTES = 64 << 20  # work memory per block of queries when scoring
_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.int64)


class GroundTruthError(ChipqError):
    """The ground truth cannot be read or does not have the expected shape."""


class MissingQueries(ChipqError):
    """Queries the evaluation needs have no descriptor, or are not queries of the ground truth."""


class NothingToEvaluate(ChipqError):
    """No query with at least one positive is left to evaluate."""


def average_precision(ranks: Sequence[int], n_positives: int) -> float:
    """Holidays AP from the 0-based ranks of the positives that were returned.

    Args:
        ranks: distinct ranks, any order; at most `n_positives` of them.
        n_positives: N, every positive of the query, returned or not (at least 1).

    >>> average_precision([0, 1], 2)
    1.0
    >>> average_precision([1], 2)  # rank 1: P_L = 0/1, P_R = 1/2; (0 + 1/2) / 2 / 2
    0.125
    """
    ordered = sorted(int(r) for r in ranks)
    if n_positives < 1 or len(ordered) > n_positives or len(set(ordered)) != len(ordered):
        raise ValueError(f"ranks {ordered} do not fit {n_positives} positives")
    if ordered and ordered[0] < 0:
        raise ValueError(f"negative rank {ordered[0]}")
    total = 0.0
    for i, rank in enumerate(ordered):
        precision_left = 1.0 if rank == 0 else i / rank
        precision_right = (i + 1) / (rank + 1)
        total += (precision_left + precision_right) / 2
    return total / n_positives


def holidays_ground_truth(names: Sequence[str]) -> tuple[GroundTruth, int]:
    """The Holidays ground truth implied by file names ``NNNNNN.jpg``.

    An image is a query when ``int(NNNNNN) % 100 == 0``; its positives are the other images with the
    same ``NNNNNN // 100``. Names whose file stem is not all digits are distractors.

    Returns:
        The ground truth and the number of distractor names.
    """
    groups: dict[int, list[str]] = {}
    seen: dict[int, str] = {}
    distractors = 0
    for name in names:
        stem = PurePosixPath(name).stem
        if not (stem.isascii() and stem.isdigit()):
            distractors += 1
            continue
        number = int(stem)
        if number in seen:
            raise GroundTruthError(f"Holidays names {seen[number][:80]!r} and {name[:80]!r} have the same number")
        seen[number] = name
        groups.setdefault(number // 100, []).append(name)
    gt = {}
    for group, members in groups.items():
        query = seen.get(group * 100)
        if query is not None:
            gt[query] = sorted((m for m in members if m != query), key=lambda m: int(PurePosixPath(m).stem))
    return dict(sorted(gt.items())), distractors


def parse_ground_truth(data: object, where: str) -> GroundTruth:
    """A ground truth from parsed JSON: ``{query: [positive, ...]}``, or the UKBench-style
    ``{"groups": ..., "relevant": {query: [positive, ...]}}`` (only "relevant" is used)."""
    if isinstance(data, dict) and isinstance(data.get("relevant"), dict):
        data = data["relevant"]
    if not isinstance(data, dict):
        raise GroundTruthError(f"{where}: expected a JSON object {{query: [positive, ...]}}")
    gt = {}
    for query, positives in data.items():
        if not isinstance(positives, list) or not all(isinstance(p, str) for p in positives):
            raise GroundTruthError(f"{where}: query {query[:80]!r}: expected a list of names")
        gt[query] = list(dict.fromkeys(p for p in positives if p != query))
    return gt


def load_ground_truth(path: Path) -> GroundTruth:
    """Read a JSON ground-truth file (`parse_ground_truth`)."""
    path = Path(path)
    try:
        data = json.loads(read_regular(path, MAX_GT_BYTES, "ground truth").decode("utf-8"))
    except FileRefused as exc:
        raise GroundTruthError(str(exc)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise GroundTruthError(f"{path}: cannot read the ground truth ({exc})") from exc
    return parse_ground_truth(data, str(path))


def similarities(queries: np.ndarray, database: np.ndarray, kind: DescriptorKind, dim: int) -> np.ndarray:
    """Scores of every query code against every database code, higher is more similar: (Q, N).

    Cosine for float and byte codes (0 where a vector is all zero), ``1 − 2·hamming/dim`` for bits.
    """
    kind = DescriptorKind(kind)
    if kind is DescriptorKind.BIT:
        q = np.asarray(queries, dtype=np.uint8)
        db = np.asarray(database, dtype=np.uint8)
        hamming = np.zeros((len(q), len(db)), dtype=np.int64)
        rows = max(1, SCORE_CHUNK_BYTES // max(1, db.size * 8))  # the popcount of a block is int64
        for i in range(0, len(q), rows):
            hamming[i : i + rows] = _POPCOUNT[q[i : i + rows, None, :] ^ db[None, :, :]].sum(axis=2)
        return 1.0 - 2.0 * hamming / dim
    return _unit(queries) @ _unit(database).T


def _unit(codes: np.ndarray) -> np.ndarray:
    v = np.asarray(codes, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


@dataclass
class QueryResult:
    """One query's AP and the counts behind it."""

    query: str
    ap: float
    positives: int  # N, returned or not
    missing: int  # positives without a descriptor


@dataclass
class Evaluation:
    """Per-query results (ground-truth order), the mAP and what could not be used."""

    results: list[QueryResult]
    mean_ap: float
    kind: DescriptorKind
    database_size: int
    missing_positives: int = 0
    no_positives: list[str] = field(default_factory=list)
    zero_descriptors: int = 0  # float descriptors that are all zero: they tie with everything


def zero_rows(dset: DescriptorSet) -> int:
    """How many float descriptors are zero vectors (their cosine to anything is 0: a tie that file
    order breaks). Byte and bit codes carry no such sign; they count 0."""
    if dset.kind is not DescriptorKind.FLOAT or not len(dset.codes):
        return 0
    return int(np.count_nonzero(~np.any(dset.codes != 0, axis=1)))


class NameLookup:
    """Ground-truth name -> descriptor index: exact, else by a file name only one descriptor has.

    The one rule by which chipq matches a name of a ground truth to a list of names (descriptor
    names, or the ground truth's own queries): `evaluate`, `select_queries`, and the relevance
    marks of `chipq search --gt` (`positives_of`).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.exact = {name: i for i, name in enumerate(names)}
        by_base: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            by_base.setdefault(PurePosixPath(name).name, []).append(i)
        self.base = {base: ids[0] for base, ids in by_base.items() if len(ids) == 1}

    def find(self, name: str) -> int | None:
        if name in self.exact:
            return self.exact[name]
        return self.base.get(PurePosixPath(name).name)


_Names = NameLookup  # the old name, still imported by chipq.reports.html


def positives_of(gt: GroundTruth, query: str, lookup: NameLookup) -> set[int] | None:
    """The indices `lookup` gives the positives of `query`; the query is matched to the ground
    truth's queries by the same rule (`NameLookup`).

    Returns:
        None when `query` is not a query of `gt`; else the positives that `lookup`'s names hold.
    """
    keys = list(gt)
    at = NameLookup(keys).find(query)
    if at is None:
        return None
    return {lookup.find(name) for name in gt[keys[at]]} - {None}


def select_queries(gt: GroundTruth, wanted: Sequence[str]) -> GroundTruth:
    """The part of `gt` whose queries are `wanted` (matched like descriptor names), in `wanted` order."""
    keys = list(gt)
    lookup = NameLookup(keys)
    found = [lookup.find(name) for name in wanted]
    unknown = [name for name, index in zip(wanted, found) if index is None]
    if unknown:
        raise MissingQueries(
            f"{len(unknown)} of {len(wanted)} --queries are not queries of the ground truth "
            f"(first {unknown[0][:80]!r})"
        )
    return {keys[index]: gt[keys[index]] for index in found}


def database_mask(dset: DescriptorSet, gt: GroundTruth, *, exclude_queries: bool = False) -> np.ndarray:
    """Which descriptors the queries are ranked against: all, or (``exclude_queries``) all but the
    ground truth's queries that are nobody's positive."""
    lookup = NameLookup(dset.names)
    in_db = np.ones(len(dset.names), dtype=bool)
    if exclude_queries:
        for query in gt:
            if lookup.find(query) is not None:
                in_db[lookup.find(query)] = False
        for positives in gt.values():
            for name in positives:
                if lookup.find(name) is not None:
                    in_db[lookup.find(name)] = True
    return in_db


def evaluate(
    dset: DescriptorSet,
    gt: GroundTruth,
    *,
    queries: Sequence[str] | None = None,
    exclude_queries: bool = False,
) -> Evaluation:
    """Rank queries of `gt` against the descriptors and score them (module docstring).

    Args:
        dset: the descriptors (database and queries).
        gt: the ground truth.
        queries: evaluate only these queries of `gt` (`select_queries`); default all.
        exclude_queries: leave every query of `gt` that is nobody's positive out of the database.

    Raises:
        MissingQueries: an evaluated query has no descriptor, or `queries` names a non-query.
        NothingToEvaluate: no evaluated query has a positive.
    """
    if not gt:
        raise NothingToEvaluate("the ground truth has no query")
    zeros = zero_rows(dset)
    if zeros and zeros == len(dset.codes):
        raise NothingToEvaluate(f"all {zeros} descriptors are zero vectors: every ranking would be file order, not retrieval")
    selected = gt if queries is None else select_queries(gt, queries)
    lookup = NameLookup(dset.names)
    absent = [q for q in selected if lookup.find(q) is None]
    if absent:
        raise MissingQueries(
            f"{len(absent)} of {len(selected)} queries have no descriptor (first {absent[0][:80]!r}); "
            "restrict the evaluation with --queries"
        )
    in_db = database_mask(dset, gt, exclude_queries=exclude_queries)
    evaluation = Evaluation([], 0.0, dset.kind, int(in_db.sum()), zero_descriptors=zeros)
    queries = [q for q in selected if selected[q]]
    evaluation.no_positives = [q for q in selected if not selected[q]]
    # Ranks come from the search index (chipq.retrieval.index): memory per block of queries grows
    # with the database size, never with N x N.
    from .index import PositiveRanker

    ranker = PositiveRanker(dset, in_db)
    scored = []
    for query in queries:
        row = lookup.find(query)
        found = [lookup.find(name) for name in selected[query]]
        missing = sum(index is None for index in found)
        # Two spellings of one image count once; the query never counts as its own positive.
        present = [i for i in dict.fromkeys(found) if i is not None and i != row]
        scored.append((query, row, present, missing))
    all_ranks = ranker.ranks([row for _, row, _, _ in scored], [present for _, _, present, _ in scored], block_bytes=SCORE_CHUNK_BYTES)
    for (query, _, present, missing), ranks in zip(scored, all_ranks):
        n_positives = len(present) + missing
        if n_positives == 0:  # every positive was the query itself under another name
            evaluation.no_positives.append(query)
            continue
        result = QueryResult(query, average_precision(ranks, n_positives), n_positives, missing)
        evaluation.results.append(result)
        evaluation.missing_positives += result.missing
    if not evaluation.results:
        raise NothingToEvaluate(f"none of the {len(selected)} queries has a positive")
    evaluation.mean_ap = float(np.mean([r.ap for r in evaluation.results]))
    return evaluation
