"""`chipq search INDEX QUERY...`: the top-k of each query image or query descriptor in an index."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chipq.cli import app
from chipq.cli.options import flag
from chipq.errors import UsageError

_HELP = "\n\n".join(
    [
        "Search an index from `chipq index` (or a descriptor file, searched exactly) and print each "
        "query's k best matches with their scores: cosine for float and byte descriptors, "
        "1 − 2·hamming/D (and the Hamming distance) for bit descriptors. Needs faiss.",
        "A QUERY is an image, described with --blob or --model — the model that made the index (its "
        "sha256 is checked) and the index's RNIP and input size — or a descriptor file (.npz), whose "
        "every descriptor is a query.",
        "--html PAGE writes a self-contained page: each query with its top-k thumbnails and scores "
        "(--images DIR: the folder the index was extracted from), relevant ones marked with --gt GT.json. "
        "--compare INDEX2 with --compare-blob/--compare-model searches a second index (e.g. float beside "
        "chip) and shows both side by side.",
        "Example: chipq search desc.index photo.jpg --blob vgg16.blob -k 5 --json",
    ]
)


@app.command("search", help=_HELP, short_help="Top-k matches of query images or descriptors in an index.")
def search_command(
    index_path: Path = typer.Argument(..., metavar="INDEX", help="An index file (or a descriptor file).", show_default=False),
    queries: list[Path] = typer.Argument(..., metavar="QUERY...", help="Query images or descriptor files.", show_default=False),
    blob: Optional[Path] = typer.Option(None, "--blob", "-b", metavar="BLOB", help="Describe query images with this blob.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", "-m", metavar="MODEL", help="Describe query images with this float model.", show_default=False),
    k: int = typer.Option(10, "-k", min=1, max=10000, help="Matches per query."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", min=1, metavar="N", help="ivf: cells visited per query.", show_default=False),
    as_json: bool = flag("--json", help="Print one JSON object."),
    html_out: Optional[Path] = typer.Option(None, "--html", metavar="PAGE", help="Write an HTML page of the results.", show_default=False),
    images_dir: Optional[Path] = typer.Option(None, "--images", metavar="DIR", help="Where the indexed images are (for thumbnails).", show_default=False),
    gt: Optional[Path] = typer.Option(None, "--gt", metavar="GT.json", help="Mark relevant matches (JSON ground truth).", show_default=False),
    compare: Optional[Path] = typer.Option(None, "--compare", metavar="INDEX2", help="A second index, shown beside the first.", show_default=False),
    compare_blob: Optional[Path] = typer.Option(None, "--compare-blob", metavar="BLOB", help="Model of INDEX2 (a blob).", show_default=False),
    compare_model: Optional[Path] = typer.Option(None, "--compare-model", metavar="MODEL", help="Model of INDEX2 (a float model).", show_default=False),
) -> None:
    """Search; see `_HELP`."""
    from chipq.formats.fileio import check_output, open_regular
    from chipq.retrieval.index import load_searchable, require_faiss

    if html_out is not None:
        check_output(html_out, "HTML page", "--html")
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
    answers = []  # per set: list of (query, scores, ids)
    for index, path, set_blob, set_model in sets:
        qs = _queries(index, queries, set_blob, set_model, second=len(answers) > 0)
        if not qs:
            raise UsageError("no query: the descriptor files hold no descriptor")
        codes = np.stack([q.code for q in qs])
        scores, ids = index.search(codes, k, nprobe=nprobe)
        answers.append((index, path, qs, scores, ids))
    if len({len(a[2]) for a in answers}) > 1:
        raise UsageError("--compare: the two indexes got different numbers of queries")
    result = _as_dict(answers, k)
    if html_out is not None:
        _write_html(html_out, answers, images_dir, ground_truth, k)
        result["html"] = str(html_out)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console = Console(highlight=False)
    for qi, query in enumerate(result["queries"]):
        table = Table(title=f"{query['query']}")
        table.add_column("rank", justify="right")
        for entry in result["indexes"]:
            table.add_column(f"{entry['label']}")
        per_set = [query["results"]] + [extra["results"] for extra in query.get("compare", [])]
        for rank in range(max(len(r) for r in per_set)):
            cells = []
            for results in per_set:
                if rank < len(results):
                    cells.append(f"{escape(results[rank]['name'])}  {results[rank]['score']:.4f}")
                else:
                    cells.append("")
            table.add_row(str(rank + 1), *cells)
        console.print(table)
    if html_out is not None:
        console.print(f"report → {escape(str(html_out))}")


def _queries(index, paths: list[Path], blob, model, *, second: bool):
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
        out.extend(image_queries(index, images, "blob" if blob is not None else "model", blob if blob is not None else model))
    return out


def _label(index, path: Path) -> str:
    return f"{index.dset.metadata.get('model', path.name)} ({index.kind.value}, {index.method})"


def _as_dict(answers, k: int) -> dict:
    out = {"k": k, "indexes": [], "queries": []}
    for index, path, _, _, _ in answers:
        out["indexes"].append(
            {
                "index": str(path), "label": _label(index, path), "method": index.method, "kind": index.kind.value,
                "metric": "hamming" if index.kind.value == "bit" else "cosine", "size": len(index),
            }
        )

    def results(index, scores, ids):
        rows = []
        for rank, (score, i) in enumerate(zip(scores, ids), start=1):
            if i < 0:
                continue
            row = {"rank": rank, "name": index.dset.names[int(i)], "score": float(score)}
            if index.kind.value == "bit":
                row["hamming"] = int(index.hamming(np.array([score]))[0])
            rows.append(row)
        return rows

    first = answers[0]
    for qi, query in enumerate(first[2]):
        entry = {"query": query.name, "results": results(first[0], first[3][qi], first[4][qi])}
        if query.image is not None:
            entry["image"] = str(query.image)
        if len(answers) > 1:
            entry["compare"] = [
                {"index": str(a[1]), "results": results(a[0], a[3][qi], a[4][qi])} for a in answers[1:]
            ]
        out["queries"].append(entry)
    return out


def _write_html(path: Path, answers, images_dir, ground_truth, k: int) -> None:
    from chipq.reports.html import Hit, Panel, QueryRow, render_report, resolve_image, write_report

    positives = _positives_lookup(ground_truth)
    rows = []
    first = answers[0]
    for qi, query in enumerate(first[2]):
        wanted = positives(query.name)
        image = query.image if query.image is not None else resolve_image(images_dir, query.name)
        row = QueryRow(query.name, image)
        for index, ipath, _, scores, ids in answers:
            hits = []
            for score, i in zip(scores[qi], ids[qi]):
                if i < 0:
                    continue
                name = index.dset.names[int(i)]
                relevant = None if wanted is None else (_base(name) in wanted or name in wanted)
                detail = f"hamming {int(index.hamming(np.array([score]))[0])}" if index.kind.value == "bit" else ""
                hits.append(Hit(name, float(score), relevant, resolve_image(images_dir, name), detail))
            row.panels.append(Panel(_label(index, ipath), hits))
        rows.append(row)
    labels = " vs ".join(_label(a[0], a[1]) for a in answers)
    write_report(path, render_report("chipq search", rows, subtitle=f"top {k}: {labels}"))


def _base(name: str) -> str:
    return PurePosixPath(name).name


def _positives_lookup(ground_truth):
    """query name -> set of positive names (exact and file names), or None without a ground truth."""
    if ground_truth is None:
        return lambda name: None
    by_name = {}
    for query, positives in ground_truth.items():
        names = set(positives) | {_base(p) for p in positives}
        by_name.setdefault(query, names)
        by_name.setdefault(_base(query), names)
    return lambda name: by_name.get(name, by_name.get(_base(name)))
