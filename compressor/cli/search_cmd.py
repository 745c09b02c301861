"""`chipq search INDEX QUERY...`: the top-k of each query image or query descriptor in an index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chipq.cli import app
from chipq.cli.options import flag, one_of_two, shown

_HELP = "\n\n".join(
    [
        "Search an index from `chipq index` (or a descriptor file, searched exactly) and print each "
        "query's k best matches with their scores: cosine for float and byte descriptors, "
        "1 − 2·hamming/D (and the Hamming distance) for bit descriptors. Needs faiss.",
        "A QUERY is an image, described with --blob or --model — the model that made the index (its "
        "sha256 is checked) and the index's RNIP and input size — or a descriptor file (.npz), whose "
        "every descriptor is a query.",
        "--html PAGE writes a self-contained page: each query with its top-k thumbnails and scores "
        "(--image-root DIR: the folder the index was extracted from), relevant ones marked with --gt GT.json. "
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
    k: int = typer.Option(10, "--top-k", "-k", min=1, max=10000, metavar="N", help="Matches per query."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", min=1, metavar="N", help="ivf: cells visited per query.", show_default=False),
    as_json: bool = flag("--json", help="Print one JSON object."),
    html_out: Optional[Path] = typer.Option(None, "--html", metavar="PAGE", help="Write an HTML page of the results.", show_default=False),
    image_root: Optional[Path] = typer.Option(None, "--image-root", metavar="DIR", help="Where the indexed images are (thumbnails for --html).", show_default=False),
    old_images: Optional[Path] = typer.Option(None, "--images", hidden=True, help="Old name of --image-root."),
    gt: Optional[Path] = typer.Option(None, "--gt", metavar="GT.json", help="Mark relevant matches (JSON ground truth).", show_default=False),
    compare: Optional[Path] = typer.Option(None, "--compare", metavar="INDEX2", help="A second index, shown beside the first.", show_default=False),
    compare_blob: Optional[Path] = typer.Option(None, "--compare-blob", metavar="BLOB", help="Model of INDEX2 (a blob).", show_default=False),
    compare_model: Optional[Path] = typer.Option(None, "--compare-model", metavar="MODEL", help="Model of INDEX2 (a float model).", show_default=False),
) -> None:
    """Search; see `_HELP`."""
    from chipq.pipeline.search import search

    image_root = one_of_two(image_root, "--image-root", old_images, "--images")
    answers = search(
        index_path, queries, blob=blob, model=model, k=k, nprobe=nprobe, gt=gt, compare=compare,
        compare_blob=compare_blob, compare_model=compare_model, html=html_out, image_root=image_root,
    )
    result = _as_dict(answers, k)
    if html_out is not None:
        result["html"] = str(html_out)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console = Console(highlight=False)
    for query in result["queries"]:
        table = Table(title=shown(query["query"]))
        table.add_column("rank", justify="right")
        for entry in result["indexes"]:
            table.add_column(shown(entry["label"]))
        per_set = [query["results"]] + [extra["results"] for extra in query.get("compare", [])]
        for rank in range(max(len(r) for r in per_set)):
            cells = []
            for results in per_set:
                if rank < len(results):
                    cells.append(f"{shown(results[rank]['name'])}  {results[rank]['score']:.4f}")
                else:
                    cells.append("")
            table.add_row(str(rank + 1), *cells)
        console.print(table)
    if html_out is not None:
        console.print(f"report → {escape(str(html_out))}")


def _as_dict(answers, k: int) -> dict:
    out = {"k": k, "indexes": [], "queries": []}
    for answer in answers:
        index = answer.index
        out["indexes"].append(
            {
                "index": str(answer.path), "label": answer.label, "method": index.method, "kind": index.kind.value,
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
    for qi, query in enumerate(first.queries):
        entry = {"query": query.name, "results": results(first.index, first.scores[qi], first.ids[qi])}
        if query.image is not None:
            entry["image"] = str(query.image)
        if len(answers) > 1:
            entry["compare"] = [
                {"index": str(a.path), "results": results(a.index, a.scores[qi], a.ids[qi])} for a in answers[1:]
            ]
        out["queries"].append(entry)
    return out
