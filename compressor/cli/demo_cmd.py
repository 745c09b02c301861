"""`chipq demo`: the whole job on built-in defaults, float vs compressed side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chipq.cli import app, err_console
from chipq.cli.options import flag
from chipq.errors import CheckFailed

_HELP = "\n\n".join(
    [
        "Run everything on the real VGG-16 and the sample photos: fetch the ImageNet weights, compress "
        "with plan 3x7,1x6 (and check the .onnx gives the same blob), inspect, verify (fast == golden "
        "executor, fidelity to the float model), extract NIP and RNIP-5 descriptors with the float model "
        "and with the chip's integer executor, and score retrieval on samples/ (54 Copydays-style edited "
        "queries against the 9 original photos, samples/groundtruth.json).",
        "Prints the float and compressed results side by side (mAP per method and descriptor kind, and "
        "the cosine between the two models' descriptors). Everything lands in --workdir; a rerun reuses "
        "finished descriptor files. On this project's idle two-core machine it took 3 min 49 s (README; the weights already "
        "downloaded), more than half of it the float model's RNIP-5 extraction; a busy machine takes longer.",
        "Example: chipq demo --workdir demo",
    ]
)


@app.command("demo", help=_HELP, short_help="The whole job on the real VGG-16 and sample photos.")
def demo_command(
    workdir: Path = typer.Option(Path("chipq-demo"), "--workdir", "-w", help="Folder for every output."),
    images: Optional[Path] = typer.Option(None, "--images", help="Images to describe (default: samples/).", show_default=False),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground truth JSON (default: samples/groundtruth.json).", show_default=False),
    plan: str = typer.Option("3x7,1x6", "--plan", help="Mask bits per conv layer."),
    as_json: bool = flag("--json", help="Print the results as one JSON object."),
) -> None:
    """Run the demo; see `_HELP`."""
    from chipq.reports.demo import run_demo

    with err_console.status("starting") as status:
        stage = {"text": "", "done": 0}

        def say(text: str) -> None:
            stage.update(text=escape(text), done=0)
            status.update(stage["text"])
            err_console.print(f"• {stage['text']}", highlight=False)

        def on_image(name: str) -> None:
            stage["done"] += 1
            status.update(f"{stage['text']}: {stage['done']} done")

        result = run_demo(workdir, images=images, gt=gt, plan=plan, say=say, on_image=on_image)
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
    table = Table(title="retrieval on samples/: float VGG-16 vs compressed (integer executor)")
    for column in ("method", "descriptor", "mAP float", "mAP chip", "cosine chip/float"):
        table.add_column(column, justify="left" if column in ("method", "descriptor") else "right")
    for row in result.rows:
        table.add_row(row["method"], row["descriptor"], f"{row['map_float']:.4f}", f"{row['map_chip']:.4f}", f"{row['cosine_chip_float']:.4f}")
    console.print(table)
    console.print("stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
