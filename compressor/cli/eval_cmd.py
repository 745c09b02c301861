"""`chipq eval DESCRIPTORS --gt holidays|GT.json`: per-query AP and mAP of a descriptor file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chipq.cli import app, err_console
from chipq.cli.options import flag, one_of_two
from chipq.errors import UsageError
from chipq.retrieval.descriptors import DescriptorKind
from chipq.retrieval.scoring import Evaluation

_WIDE = 160  # columns when the output is not a terminal: do not wrap the table

_HELP = "\n\n".join(
    [
        "Rank every query of the ground truth against all other images of DESCRIPTORS and print each "
        "query's average precision and the mAP (INRIA Holidays protocol: interpolated AP, a positive "
        "missing from the file adds 0).",
        "Scores: cosine similarity for float and byte descriptors, Hamming distance for bit descriptors. "
        "Ties keep the file's order.",
        "--gt holidays derives the ground truth from Holidays file names (NNNNNN.jpg: a query when "
        "NNNNNN % 100 == 0, its positives are the other images of the same hundred; other names are "
        "distractors). --gt GT.json reads {query: \\[positive, ...]} or UKBench-style "
        '{"relevant": {query: \\[...]}}. Names match exactly, or by file name when only one image has it.',
        "A query without a descriptor is an error (exit 2); use --queries to evaluate the others.",
        "--html PAGE writes a self-contained page: each query with its top -k matches as thumbnails "
        "(--image-root DIR: the folder the descriptors were extracted from), scores, relevant ones marked and "
        "the AP; --compare OTHER.npz (e.g. the float model's descriptors beside the chip's) adds a second "
        "column scored the same way.",
        "Example: chipq eval desc.npz --gt holidays --worst 10",
    ]
)


@app.command("eval", help=_HELP, short_help='Score descriptors: per-query AP and mAP.')
def eval_command(
    descriptors: Path = typer.Argument(
        ...,
        metavar="DESCRIPTORS",
        help="A descriptor file written by `chipq extract` (.npz).",
        show_default=False,
    ),
    gt: str = typer.Option(
        ...,
        "--gt",
        metavar="holidays|GT.json",
        help="Ground truth: `holidays` or a JSON file.",
        show_default=False,
    ),
    queries: Optional[str] = typer.Option(
        None,
        "--queries",
        metavar="NAMES|FILE",
        help="Evaluate only these queries: comma-separated names, or a file with one name per line "
        "(# comments).",
    ),
    exclude_queries: bool = flag("--exclude-queries",
        help="Leave the ground truth's queries out of the database (unless they are someone's positive), "
        "for query sets made of edited copies of database images.",
    ),
    worst: int = typer.Option(
        0,
        "--worst",
        min=0,
        metavar="N",
        help="Show only the N queries with the lowest AP (0: all, file order).",
    ),
    as_json: bool = flag("--json", help="Print one JSON object instead of a table."),
    html_out: Optional[Path] = typer.Option(None, "--html", metavar="PAGE", help="Write an HTML page of the rankings.", show_default=False),
    compare: Optional[Path] = typer.Option(None, "--compare", metavar="OTHER", help="A second descriptor file, shown beside (with --html; its mAP also printed).", show_default=False),
    image_root: Optional[Path] = typer.Option(None, "--image-root", metavar="DIR", help="Where the images are (thumbnails for --html).", show_default=False),
    old_images: Optional[Path] = typer.Option(None, "--images", hidden=True, help="Old name of --image-root."),
    top_k: Optional[int] = typer.Option(None, "--top-k", "-k", min=1, max=100, metavar="N", help="Matches per query on the --html page (default 10).", show_default=False),
    old_top: Optional[int] = typer.Option(None, "--top", min=1, max=100, hidden=True, help="Old name of --top-k."),
) -> None:
    """Score a descriptor file; see `_HELP`."""
    from chipq.pipeline.search import evaluate_file

    image_root = one_of_two(image_root, "--image-root", old_images, "--images")
    top_k = one_of_two(top_k, "--top-k", old_top, "--top")
    run = evaluate_file(
        descriptors, gt, queries=parse_queries(queries) if queries is not None else None,
        exclude_queries=exclude_queries, compare=compare, html=html_out, image_root=image_root,
        top_k=top_k if top_k is not None else 10,
    )
    result, distractors = run.evaluation, run.distractors
    if not as_json:
        if run.compare is not None:
            err_console.print(f"--compare {escape(str(compare))}: mAP {run.compare[2].mean_ap:.4f}", highlight=False)
        if html_out is not None:
            err_console.print(f"report → {escape(str(html_out))}", highlight=False)
    if as_json:
        print(json.dumps(_as_dict(result, descriptors, distractors), indent=2))
        return
    _warn(result, distractors)
    console = Console()
    if not console.is_terminal:
        console = Console(width=_WIDE)
    console.print(_table(result, worst))
    metric = "Hamming" if result.kind is DescriptorKind.BIT else "cosine"
    console.print(
        f"mAP [bold]{result.mean_ap:.4f}[/] over {len(result.results)} queries, "
        f"database {result.database_size} images, {result.kind.value} descriptors ({metric})",
        highlight=False,
    )


def parse_queries(text: str) -> list[str]:
    """``--queries``: a file with one name per line if such a file exists, else comma-separated names.

    Raises:
        UsageError: the file cannot be read, or no name is given.
    """
    path = Path(text)
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--queries {text}: cannot read ({exc})") from exc
        names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    else:
        names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--queries {text!r}: no query names")
    return names


def _warn(result: Evaluation, distractors: int) -> None:
    def warn(message: str) -> None:
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False)

    if result.missing_positives:
        warn(f"{result.missing_positives} positives have no descriptor; each adds 0 to its query's AP")
    if result.no_positives:
        first = escape(repr(result.no_positives[0]))
        count = len(result.no_positives)
        warn(f"{count} queries have no positive and are left out of the mAP (first {first})")
    if distractors:
        warn(f"{distractors} names are not Holidays numbers (NNNNNN.jpg) and count as distractors")
    if result.zero_descriptors:
        warn(f"{result.zero_descriptors} descriptors are zero vectors: they tie with every query and file order ranks them")


def _table(result: Evaluation, worst: int) -> Table:
    rows = result.results
    title = "average precision per query"
    if worst:
        rows = sorted(rows, key=lambda r: r.ap)[:worst]  # sorted() is stable: ties keep file order
        title = f"the {len(rows)} lowest average precisions"
    table = Table(title=title)
    table.add_column("query")
    table.add_column("AP", justify="right")
    table.add_column("positives", justify="right")
    table.add_column("missing", justify="right")
    for row in rows:
        missing = str(row.missing) if row.missing else ""
        table.add_row(escape(row.query), f"{row.ap:.4f}", str(row.positives), missing)
    return table


def _as_dict(result: Evaluation, path: Path, distractors: int) -> dict:
    return {
        "descriptors": str(path),
        "kind": result.kind.value,
        "metric": "hamming" if result.kind is DescriptorKind.BIT else "cosine",
        "database_size": result.database_size,
        "queries": len(result.results),
        "map": result.mean_ap,
        "missing_positives": result.missing_positives,
        "queries_without_positives": result.no_positives,
        "distractors": distractors,
        **({"zero_descriptors": result.zero_descriptors} if result.zero_descriptors else {}),  # only when there are any
        "results": [
            {"query": r.query, "ap": r.ap, "positives": r.positives, "missing": r.missing}
            for r in result.results
        ],
    }
