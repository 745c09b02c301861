"""`chipq index DESCRIPTORS -o INDEX`: a search index (exact, or approximate ivf) of a descriptor file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from chipq.cli import app
from chipq.cli.options import flag
from chipq.retrieval.index import IndexMethod

_HELP = "\n\n".join(
    [
        "Build a search index of a descriptor file from `chipq extract`, for `chipq search`. Needs faiss "
        "(pip install 'chipq\\[index]').",
        "--method flat (default) is exact: cosine similarity (inner product of normalised vectors) for "
        "float and byte descriptors, Hamming distance for bit descriptors. --method ivf is approximate, "
        "for large float/byte sets: NLIST k-means cells (default about 4·sqrt(N)), NPROBE of them "
        "visited per query (default NLIST/16; `chipq search --nprobe` overrides). bench/scale.py "
        "measures its recall@10 against flat.",
        "The index file is chipq's own .npz (the descriptors, their names and metadata, the ivf cells), "
        "read as hostile input; the faiss structure is built from it on load, no faiss file is ever read.",
        "Example: chipq index desc.npz -o desc.index",
    ]
)


@app.command("index", help=_HELP, short_help="Build a search index of a descriptor file.")
def index_command(
    descriptors: Path = typer.Argument(..., metavar="DESCRIPTORS", help="A descriptor file (.npz).", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", metavar="INDEX", help="The index file to write.", show_default=False),
    method: IndexMethod = typer.Option(IndexMethod.FLAT, "--method", case_sensitive=False, help="flat (exact) or ivf (approximate)."),
    nlist: Optional[int] = typer.Option(None, "--nlist", min=1, metavar="N", help="ivf: number of cells.", show_default=False),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", min=1, metavar="N", help="ivf: cells visited per query.", show_default=False),
    as_json: bool = flag("--json", help="Print one JSON object."),
) -> None:
    """Build an index; see `_HELP`."""
    from chipq.pipeline.search import build_index_file

    run = build_index_file(descriptors, output, method=IndexMethod(method).value, nlist=nlist, nprobe=nprobe)
    index = run.index
    dset = index.dset
    result = {
        "index": str(output),
        "descriptors": len(dset.names),
        "kind": dset.kind.value,
        "dim": dset.dim,
        "method": index.method,
        "metric": "hamming" if dset.kind.value == "bit" else "cosine",
        "nlist": index.nlist,
        "nprobe": index.nprobe,
        "seconds": round(run.seconds, 3),
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return
    extra = f", nlist {index.nlist}, nprobe {index.nprobe}" if index.method == "ivf" else ""
    Console(highlight=False).print(
        f"{len(dset.names)} {dset.kind.value} descriptors → {escape(str(output))} ({index.method}, {result['metric']}{extra})"
    )
