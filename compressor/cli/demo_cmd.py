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
from chipq.quant.plan import PAPER_PLAN

DEFAULT_FOLDER = Path("chipq-demo")

_HELP = "\n\n".join(
    [
        "Run everything on the real VGG-16 and the sample photos: fetch the ImageNet weights, compress "
        "twice with plan 3x7,1x6 — post-training (`--no-retrain`, and a check that the .onnx gives the same "
        "blob) and the default with Algorithm 1 retraining on the photo set shipped with chipq — then "
        "inspect, verify (fast == golden executor, fidelity to the float model), extract NIP descriptors "
        "with the float model and both blobs, and score retrieval on samples/ (54 Copydays-style edited "
        "queries against 9 original photos, none of them a training photo).",
        "Prints float / post-training / retrained side by side (mAP per descriptor kind, and each blob's "
        "descriptor cosine to the float model). Everything lands in --output (default chipq-demo); a rerun reuses the "
        "retrained blob and finished descriptor files. Progress: a status line in a terminal, plain lines "
        "in a log. Run time: README, \"Quick start\" (measured there; the retraining dominates).",
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
        None, "--images", metavar="DIR", help="Images to describe (default: the sample set shipped with chipq, samples/ in a checkout).", show_default=False
    ),
    gt: Optional[Path] = typer.Option(None, "--gt", metavar="FILE", help="Ground truth JSON (default: the sample set's groundtruth.json).", show_default=False),
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


def _render(result) -> None:
    console = Console(highlight=False) if Console().is_terminal else Console(highlight=False, width=120)
    console.print(
        f"blob {escape(result.blob)}: {result.blob_bytes:,} bytes, {result.ratio:.2f}x smaller than the fp32 conv weights; "
        f".onnx gives the same bytes: {'yes' if result.onnx_identical else 'NO'}; "
        f"fast == golden executor: {'yes' if result.exact else 'NO'}"
    )
    table = Table(title="retrieval on samples/ (not used for training): float VGG-16 vs the two blobs")
    columns = ("method", "descriptor", "mAP float", "mAP post-training", "mAP retrained", "cos post-training", "cos retrained")
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "descriptor") else "right")
    for row in result.rows:
        table.add_row(
            row["method"], row["descriptor"], f"{row['map_float']:.4f}", f"{row['map_post-training']:.4f}",
            f"{row['map_retrained']:.4f}", f"{row['cosine_post-training']:.4f}", f"{row['cosine_retrained']:.4f}",
        )  # fmt: skip
    console.print(table)
    console.print("stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
