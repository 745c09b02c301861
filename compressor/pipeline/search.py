"""`chipq index`, `chipq search` and `chipq eval`: descriptor files indexed, searched and scored.

Each function checks its inputs before any work, runs the retrieval layer and, when asked,
writes the HTML page (`chipq.reports.html`); the CLI renders what they return. Query images are
described with the network that made the index, checked by content (`_query_network`), and with
the index's own RNIP and input size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chipq.errors import UsageError
from chipq.retrieval.descriptors import DescriptorSet
from chipq.retrieval.scoring import Evaluation, GroundTruth

HOLIDAYS = "holidays"  # --gt holidays: the ground truth of Holidays file names
QUERY_BATCH = 8  # network inputs per call when describing query images


# --- index ------------------------------------------------------------------------------------------


@dataclass
class IndexRun:
    """An index written: the index, and the seconds it took to build and write."""

    index: object  # chipq.retrieval.index.SearchIndex
    seconds: float


def build_index_file(
    descriptors: Path, output: Path, *, method: str = "flat", nlist: int | None = None, nprobe: int | None = None
) -> IndexRun:
    """Index a descriptor file (`chipq.retrieval.index.build_index`) and write the index file."""
    from chipq.formats.fileio import check_output
    from chipq.retrieval.descriptors import load_descriptors
    from chipq.retrieval.index import build_index, require_faiss, save_index

    check_output(output, "index file", "--output", inputs=[("descriptor file", descriptors)])
    require_faiss()
    dset = load_descriptors(descriptors)
    start = time.perf_counter()
    index = build_index(dset, method, nlist=nlist, nprobe=nprobe)
    save_index(output, index)
    return IndexRun(index, time.perf_counter() - start)


# --- search -----------------------------------------------------------------------------------------


@dataclass
class SearchAnswer:
    """One index searched: per query its top-k scores and database ids (-1: no more hits)."""

    index: object  # chipq.retrieval.index.SearchIndex
    path: Path
    queries: list  # chipq.retrieval.index.Query
    scores: np.ndarray
    ids: np.ndarray

    @property
    def label(self) -> str:
        return index_label(self.index, self.path)


def check_image_root(image_root: Path | None) -> None:
    """``--image-root`` must be a folder: a page with no thumbnails is no page."""
    if image_root is not None and not Path(image_root).is_dir():
        raise UsageError(f"--image-root {image_root}: not a folder (the thumbnails of the page are read from it)")


def index_label(index, path: Path) -> str:
    """How a page or a table names an index: its model, descriptor kind and method."""
    return f"{index.dset.metadata.get('model', path.name)} ({index.kind.value}, {index.method})"


def search(
    index_path: Path,
    queries: list[Path],
    *,
    blob: Path | None = None,
    model: Path | None = None,
    k: int = 10,
    nprobe: int | None = None,
    gt: Path | None = None,
    compare: Path | None = None,
    compare_blob: Path | None = None,
    compare_model: Path | None = None,
    html: Path | None = None,
    image_root: Path | None = None,
) -> list[SearchAnswer]:
    """Search an index (and, with `compare`, a second one) for each query; write the page if asked.

    Args:
        index_path: an index file, or a descriptor file (searched exactly).
        queries: images (described with `blob` or `model`) or descriptor files (.npz).
        blob, model: the network that made the index, for query images.
        k: matches per query.
        nprobe: ivf cells visited per query.
        gt: a JSON ground truth: marks relevant matches on the page.
        compare, compare_blob, compare_model: a second index and its network.
        html: the page to write; image_root: where the indexed images are (thumbnails).

    Returns:
        One answer per index, the first for `index_path`.
    """
    from chipq.formats.fileio import check_output, open_regular
    from chipq.retrieval.index import load_searchable, require_faiss

    if html is not None:
        named = [("index file", index_path), ("index file", compare), ("blob", blob), ("model", model),
                 ("blob", compare_blob), ("model", compare_model), ("ground truth", gt)]  # fmt: skip
        check_output(html, "HTML page", "--html", inputs=named + [("query", query) for query in queries])
    check_image_root(image_root)
    # every file named must be a readable regular file before any other work (a FIFO would block)
    for path, what in [(index_path, "index file"), (compare, "index file"), (blob, "blob"), (model, "model"),
                       (compare_blob, "blob"), (compare_model, "model"), (gt, "ground truth")]:
        if path is not None:
            open_regular(path, what).close()
    for query in queries:
        open_regular(query, "query").close()

    require_faiss()
    if blob is not None and model is not None:
        raise UsageError("give at most one of --blob BLOB or --model MODEL")
    if compare is None and (compare_blob or compare_model):
        raise UsageError("--compare-blob/--compare-model need --compare INDEX2")
    ground_truth = None
    if gt is not None:
        from chipq.retrieval.scoring import load_ground_truth

        ground_truth = load_ground_truth(gt)
    sets = [(load_searchable(index_path), index_path, blob, model)]
    if compare is not None:
        if compare_blob is not None and compare_model is not None:
            raise UsageError("give at most one of --compare-blob or --compare-model")
        sets.append((load_searchable(compare), compare, compare_blob, compare_model))
    answers: list[SearchAnswer] = []
    for index, path, set_blob, set_model in sets:
        qs = _queries(index, path, queries, set_blob, set_model, second=len(answers) > 0)
        if not qs:
            raise UsageError("no query: the descriptor files hold no descriptor")
        scores, ids = index.search(np.stack([q.code for q in qs]), k, nprobe=nprobe)
        answers.append(SearchAnswer(index, path, qs, scores, ids))
    if len({len(a.queries) for a in answers}) > 1:
        raise UsageError("--compare: the two indexes got different numbers of queries")
    if html is not None:
        _write_search_page(html, answers, image_root, ground_truth, k)
    return answers


def _queries(index, index_path: Path, paths: list[Path], blob: Path | None, model: Path | None, *, second: bool) -> list:
    from chipq.retrieval.index import descriptor_queries, image_queries

    images, out = [], []
    for path in paths:
        if path.suffix.lower() == ".npz":
            if second:
                raise UsageError("--compare works with query images, not descriptor files")
            out.extend(descriptor_queries(index, path))
        else:
            images.append(path)
    if images:
        if blob is None and model is None:
            flag = "--compare-blob or --compare-model" if second else "--blob or --model"
            raise UsageError(f"query images need {flag}: the model that made the index")
        kind, path = ("blob", blob) if blob is not None else ("model", model)
        network = _query_network(index, kind, path)
        _check_query_size(index, index_path, network)
        out.extend(image_queries(index, images, network.features(QUERY_BATCH), batch=QUERY_BATCH))
    return out


def _check_query_size(index, index_path: Path, network) -> None:
    """The input size stored in the index, checked as `chipq extract --input` checks it: large
    enough for the network's pools, small enough for this machine's memory."""
    from chipq.executor.memory import check_fits, check_input_size
    from chipq.retrieval.index import QueryMismatch, query_settings

    try:
        _, size = query_settings(index)
    except QueryMismatch as exc:
        raise QueryMismatch(f"{index_path}: {exc}") from None
    what = f"{index_path}: stored input {size[1]}x{size[0]}"
    check_input_size(network.layers, size, what)
    check_fits(network.layers, size, QUERY_BATCH, what)


def _query_network(index, kind: str, path: Path):
    """Load the network for query images, refusing another one than the network that made the index.

    The descriptor metadata names the network by content (`chipq extract`): ``blob_sha256`` (the
    blob file's bytes) or ``model_sha256`` (the float weights, `FloatStack.weights_sha256`).
    """
    from chipq.pipeline.sources import load_network
    from chipq.retrieval.index import QueryMismatch

    meta = index.dset.metadata
    made_with = meta.get("model")
    key = f"{kind}_sha256"
    want = meta.get(key)
    if not isinstance(want, str):
        raise QueryMismatch(f"--{kind} {path}: the index was made with {made_with!r}, not a {kind}; describe queries with the same model")
    network = load_network(**{kind: path})
    got = network.identity[key]
    if got != want:
        raise QueryMismatch(
            f"--{kind} {path}: sha256 {got[:12]}…, but the index was made with {made_with} "
            f"(sha256 {want[:12]}…); describe queries with the same model"
        )
    return network


def _write_search_page(path: Path, answers: list[SearchAnswer], image_root, ground_truth: GroundTruth | None, k: int) -> None:
    from chipq.reports.html import Hit, Panel, QueryRow, render_report, resolve_image, write_report
    from chipq.retrieval.scoring import NameLookup, positives_of

    lookups = [NameLookup(answer.index.dset.names) for answer in answers]
    rows = []
    for qi, query in enumerate(answers[0].queries):
        image = query.image if query.image is not None else resolve_image(image_root, query.name)
        row = QueryRow(query.name, image)
        for answer, lookup in zip(answers, lookups):
            wanted = None if ground_truth is None else positives_of(ground_truth, query.name, lookup)
            hits = []
            for score, i in zip(answer.scores[qi], answer.ids[qi]):
                if i < 0:
                    continue
                name = answer.index.dset.names[int(i)]
                relevant = None if wanted is None else int(i) in wanted
                detail = f"hamming {int(answer.index.hamming(np.array([score]))[0])}" if answer.index.kind.value == "bit" else ""
                hits.append(Hit(name, float(score), relevant, resolve_image(image_root, name), detail))
            row.panels.append(Panel(answer.label, hits))
        rows.append(row)
    labels = " vs ".join(answer.label for answer in answers)
    write_report(path, render_report("chipq search", rows, subtitle=f"top {k}: {labels}"))


# --- eval -------------------------------------------------------------------------------------------


@dataclass
class EvalRun:
    """A descriptor file scored, and the second one of `--compare` (scored the same way)."""

    path: Path
    dset: DescriptorSet
    evaluation: Evaluation
    distractors: int  # names that are not Holidays numbers (with --gt holidays)
    compare: tuple[Path, DescriptorSet, Evaluation] | None = None


def evaluate_file(
    descriptors: Path,
    gt: str,
    *,
    queries: list[str] | None = None,
    exclude_queries: bool = False,
    compare: Path | None = None,
    html: Path | None = None,
    image_root: Path | None = None,
    top_k: int = 10,
) -> EvalRun:
    """Score a descriptor file against a ground truth (`chipq.retrieval.scoring.evaluate`).

    Args:
        descriptors: the descriptor file.
        gt: ``"holidays"`` (from the file names) or the path of a JSON ground truth.
        queries: evaluate only these queries.
        exclude_queries: leave the ground truth's queries out of the database.
        compare: a second descriptor file, scored the same way.
        html: the page to write; image_root: where the images are; top_k: matches per query on it.

    Raises:
        NothingToEvaluate: `gt` is holidays and no name is a Holidays query; see `evaluate`.
    """
    from chipq.formats.fileio import check_output
    from chipq.retrieval.descriptors import load_descriptors
    from chipq.retrieval.scoring import NothingToEvaluate, evaluate, holidays_ground_truth, load_ground_truth

    if html is not None:
        inputs = [("descriptor file", descriptors), ("descriptor file", compare), ("ground truth", None if gt == HOLIDAYS else gt)]
        check_output(html, "HTML page", "--html", inputs=inputs)
    check_image_root(image_root)
    dset = load_descriptors(descriptors)
    distractors = 0
    if gt == HOLIDAYS:
        ground_truth, distractors = holidays_ground_truth(dset.names)
        if not ground_truth:
            raise NothingToEvaluate(
                f"{descriptors}: no Holidays query (a name NNNNNN.jpg with NNNNNN % 100 == 0) among "
                f"{len(dset.names)} names"
            )
    else:
        ground_truth = load_ground_truth(Path(gt))
    try:
        evaluation = evaluate(dset, ground_truth, queries=queries, exclude_queries=exclude_queries)
    except NothingToEvaluate as exc:
        raise NothingToEvaluate(f"{descriptors}: {exc}") from None
    run = EvalRun(Path(descriptors), dset, evaluation, distractors)
    if compare is not None:
        other = load_descriptors(compare)
        run.compare = (compare, other, evaluate(other, ground_truth, queries=queries, exclude_queries=exclude_queries))
    if html is not None:
        from chipq.reports.html import evaluation_rows, render_report, write_report

        sets = [(eval_label(descriptors, dset), dset, evaluation)]
        if run.compare is not None:
            sets.append((eval_label(compare, run.compare[1]), run.compare[1], run.compare[2]))
        rows = evaluation_rows(sets, ground_truth, exclude_queries=exclude_queries, images_dir=image_root, k=top_k)
        maps = ", ".join(f"{label}: mAP {ev.mean_ap:.4f}" for label, _, ev in sets)
        write_report(html, render_report("chipq eval", rows, subtitle=f"{len(rows)} queries; {maps}"))
    return run


def eval_label(path: Path, dset: DescriptorSet) -> str:
    """How a page names a descriptor file: its model and descriptor kind."""
    return f"{dset.metadata.get('model', Path(path).name)} ({dset.kind.value})"
