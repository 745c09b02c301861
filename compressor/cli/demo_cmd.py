"""`chipq demo`: the whole job on built-in defaults, float vs compressed side by side."""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chipq.cli import app, err_console
from chipq.cli.options import flag
from chipq.cli.progress import status
from chipq.errors import CheckFailed, UsageError
from chipq.pipeline.demo_set import DEMO_SET_DIR, EDITS, GRID
from chipq.quant.plan import PAPER_PLAN

DEFAULT_FOLDER = Path("chipq-demo")

_HELP = "\n\n".join(
    [
        "Run everything on the real VGG-16: fetch the ImageNet weights, compress twice with plan 3x7,1x6 — "
        "post-training (`--no-retrain`, and a check that the .onnx gives the same blob) and the default with "
        "Algorithm 1 retraining on the photo set shipped with chipq — then inspect, verify (fast == golden "
        "executor, fidelity to the float model), extract NIP descriptors with the float model and both blobs, "
        "and score retrieval.",
        f"The retrieval set is made into OUTPUT/{DEMO_SET_DIR} from the 9 original photos of samples/ (none of "
        f"them a training or calibration photo): each cut into {GRID}x{GRID} tiles (the database: a tile's "
        f"neighbours look alike), and {len(EDITS)} hard edits of every tile as queries ({', '.join(EDITS)}: "
        "half the tile tilted with a colour cast; a crop tilted, shrunk, dulled and saved at JPEG 20), each "
        "with its tile as the one right answer. --images with --gt scores another set instead.",
        "Prints float / post-training / retrained side by side: mAP per descriptor kind (32-bit, 8-bit, 1-bit), "
        "how many queries find their tile first, and each blob's descriptor cosine to the float model, with a "
        "legend; then each stage's wall and CPU seconds. Everything lands in --output (default chipq-demo); a "
        "rerun reuses the retrained blob and finished descriptor files. Progress: a status line in a terminal, "
        "plain lines in a log. Run time: README, \"Quick start\" (measured there; the retraining dominates).",
        "Example: chipq demo -o demo",
    ]
)


@app.command("demo", help=_HELP, short_help="The whole job on the real VGG-16 and sample photos.")
def demo_command(
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="DIR", help="Folder for every output. Default: chipq-demo.", show_default=False
    ),
    workdir: Optional[Path] = typer.Option(None, "--workdir", "-w", metavar="DIR", hidden=True, help="Old name of --output."),
    images: Optional[Path] = typer.Option(
        None, "--images", metavar="DIR", help="Images to describe, with --gt (default: the demo's set, made from the sample photos).", show_default=False
    ),
    gt: Optional[Path] = typer.Option(None, "--gt", metavar="FILE", help="Ground truth JSON of --images.", show_default=False),
    plan: str = typer.Option(PAPER_PLAN, "--plan", "-p", metavar="PLAN", help="Mask bits per conv layer."),
    as_json: bool = flag("--json", help="Print the results as one JSON object (progress stays on stderr)."),
) -> None:
    """Run the demo; see `_HELP`."""
    from chipq.pipeline.demo import run_demo

    if output is not None and workdir is not None and output != workdir:
        raise UsageError(f"--output {output} and --workdir {workdir} (its old name) name different folders: give one")
    folder = output or workdir or DEFAULT_FOLDER
    with status("demo", err_console, quiet=as_json) as shown, redirect_stdout(sys.stderr if as_json else sys.stdout):
        stage = {"text": "", "done": 0}

        def say(text: str) -> None:
            stage.update(text=text, done=0)
            shown.update(text)
            err_console.print(f"• {escape(text)}", highlight=False)

        def on_image(name: str) -> None:
            stage["done"] += 1
            shown.update(stage["text"], stage["done"])

        def on_step(step: int, steps: int) -> None:
            shown.update("retraining", step, steps)

        result = run_demo(folder, images=images, gt=gt, plan=plan, say=say, on_image=on_image, on_step=on_step)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _render(result)
    if not result.exact:
        raise CheckFailed("the fast executor differs from the golden one")


MODEL_ROWS = (
    ("float", "float VGG-16 (the reference)"),
    ("post-training", "post-training blob (--no-retrain)"),
    ("retrained", "retrained blob (the default)"),
)
KIND_COLUMNS = {"float": "mAP 32-bit", "byte": "mAP 8-bit", "bit": "mAP 1-bit"}
LEGEND = (
    "mAP: mean average precision over the queries, 0 to 1; 1.0000 = every query's original ranked first. "
    "32/8/1-bit: the descriptor stored as floats, bytes or bits. right first: how many queries have their "
    "original ranked first (32-bit). cosine to float: mean cosine between a model's descriptors and the float "
    "model's of the same images, 1 = the same. Higher is better in every column."
)


def _render(result) -> None:
    console = Console(highlight=False) if Console().is_terminal else Console(highlight=False, width=120)
    console.print(
        f"blob {escape(result.blob)}: {result.blob_bytes:,} bytes, {result.ratio:.2f}x smaller than the fp32 conv weights; "
        f".onnx gives the same bytes: {'yes' if result.onnx_identical else 'NO'}; "
        f"fast == golden executor: {'yes' if result.exact else 'NO'}"
    )
    for method in dict.fromkeys(row["method"] for row in result.rows):
        console.print(_table(result, method, [row for row in result.rows if row["method"] == method]))
    console.print(LEGEND)
    console.print(
        "stage times, wall (CPU) seconds: "
        + ", ".join(f"{k} {v:.0f} ({result.cpu_seconds.get(k, 0.0):.0f})" for k, v in result.seconds.items())
    )


def _table(result, method: str, rows: list[dict]) -> Table:
    """One row per model, one column per descriptor kind: the models compared down a column."""
    table = Table(
        title=f"{method} retrieval: find the original of each of {result.queries} edited queries among "
        f"{result.database} images (none of them a training photo)"
    )
    by_kind = {row["descriptor"]: row for row in rows}
    kinds = [kind for kind in KIND_COLUMNS if kind in by_kind]
    for column in ("model", *(KIND_COLUMNS[k] for k in kinds), "right first", "cosine to float"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model, label in MODEL_ROWS:
        first = by_kind.get("float", rows[0])[f"found_first_{model}"]
        cosine = "1 (itself)" if model == "float" else f"{by_kind.get('float', rows[0])[f'cosine_{model}']:.4f}"
        table.add_row(label, *(f"{by_kind[k][f'map_{model}']:.4f}" for k in kinds), f"{round(first * result.queries)}/{result.queries}", cosine)
    return table
