"""`chipq extract`: NIP / RNIP descriptors of images, from the chip model or the float model."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from chipq.cli import app, err_console
from chipq.cli.options import flag, format_size, one_of_two, parse_size, shown
from chipq.cli.progress import ProgressLog
from chipq.retrieval.descriptors import DescriptorKind
from chipq.retrieval.rois import RNIP_LEVELS

_HELP = "\n\n".join(
    [
        "Compute a retrieval descriptor for every image (JPEG/PNG; a folder searched recursively, or a "
        "text file listing one path per line) and write them to one .npz file.",
        "--blob runs the compressed model in chipq's integer executor (what the chip computes); "
        "--model runs a float model through the same pipeline, for comparison. Give exactly one.",
        "NIP (default): the image is resized to the chip input, turned 0/90/180/270 degrees, the last "
        "conv maps are pooled over R-MAC regions (square-root pooling), averaged, max-pooled over the "
        "rotations and L2-normalised: 512-D. --rnip 5/9/14 instead cuts R-MAC regions from the input "
        "image (5 and 9: levels 1-2 plus the whole image; 14: levels 1-3), resizes each to the chip "
        "input and pools those maps the same way — how a 224x224 buffer serves a 640x480 photo.",
        "--descriptor float (2 KB), byte (512 bytes) or bit (512 bits). Images that cannot be decoded "
        "are skipped with a warning and counted; when no image can be used nothing is written and the "
        "exit code is 2. The run is checkpointed in OUT.partial.npz every 100 images and every 30 s; "
        "an interrupted run resumes from it and gives the same file as an uninterrupted one. A "
        "checkpoint is resumed only by the same run: same blob or model (by content, SHA-256), same "
        "images (names and contents), same settings; otherwise it is refused.",
        "--workers N runs on Ray (pip install 'chipq\\[ray]'): a local cluster of N workers, or an existing "
        "cluster with --ray-address; each worker loads the model once and reads and decodes its images "
        "itself. Work goes to shards in OUT.shards/ with a manifest; a killed run resumes shard by shard "
        "(only with the same model, images and settings), and the result equals a single-process run's.",
        "Example: chipq extract samples --blob vgg16.blob --rnip 9 -o desc.npz",
    ]
)


# --rnip N: the RNIP crop counts the library knows (5, 9, 14), as choices the parser checks
RnipCrops = Enum("RnipCrops", [(f"RNIP_{n}", str(n)) for n in RNIP_LEVELS], type=str)


@app.command("extract", help=_HELP, short_help='NIP / RNIP descriptors of images (chip or float model).')
def extract_command(
    images: Path = typer.Argument(..., metavar="IMAGES", help="A folder of images (recursive) or a list file.", show_default=False),
    blob: Optional[Path] = typer.Option(None, "--blob", "-b", metavar="BLOB", help="A chip blob from `chipq compress`.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", "-m", metavar="MODEL", help="A float model (.pt/.onnx) instead of a blob.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", metavar="OUT", help="The descriptor file to write (.npz).", show_default=False),
    rnip: Optional[RnipCrops] = typer.Option(None, "--rnip", metavar="5|9|14", help="Use RNIP with N input crops: 5, 9 or 14.", show_default=False),
    descriptor: DescriptorKind = typer.Option(DescriptorKind.FLOAT, "--descriptor", "-d", case_sensitive=False, help="Descriptor kind."),
    input_size: Optional[str] = typer.Option(
        None, "--input", metavar="WxH", help="Network input size, width x height (default: the blob's input buffer, 224x224 for --model).", show_default=False
    ),
    old_size: Optional[str] = typer.Option(None, "--size", hidden=True, help="Deprecated name of --input."),
    batch: int = typer.Option(8, "--batch", min=1, help="Network inputs per executor call."),
    as_json: bool = flag("--json", help="Print the run summary as one JSON object."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, metavar="N", help="Run on Ray with N workers.", show_default=False),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDR", help="An existing Ray cluster (with --workers).", show_default=False),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", min=1, metavar="N", help="Images per shard (with --workers; default 64).", show_default=False),
    checkpoint_seconds: float = typer.Option(30.0, "--checkpoint-seconds", min=0, hidden=True, help="Seconds between checkpoints (tests)."),
) -> None:
    """Extract descriptors; see `_HELP`."""
    from chipq.pipeline.extract import ExtractSettings, extract

    size_text = one_of_two(input_size, "--input", old_size, "--size")
    size_option = "--input" if old_size is None else "--size"
    requested_hw = parse_size(size_text, size_option) if size_text is not None else None
    settings = ExtractSettings(
        kind=DescriptorKind(descriptor),
        rnip=int(rnip.value) if rnip is not None else None,
        input_hw=requested_hw,
        input_label=f"{size_option} {format_size(requested_hw)}" if requested_hw else "",
        batch=batch,
        checkpoint_seconds=checkpoint_seconds,
        workers=workers,
        ray_address=ray_address,
        shard_size=shard_size,
    )
    title = "extracting" if workers is None else f"extracting on Ray ({workers} workers)"
    with _ProgressDisplay(title, quiet=as_json) as progress:
        result = extract(images, output, blob=blob, model=model, settings=settings, on_progress=progress.update)
    for name, reason in result.summary.skipped:
        err_console.print(f"warning: skipped {shown(name)}: {shown(reason)}", highlight=False, soft_wrap=True)
    summary = result.summary
    if as_json:
        print(json.dumps(_as_dict(result), indent=2))
        return
    if result.shards is None:
        resumed = f"{summary.resumed} resumed"
    else:
        resumed = f"{result.shards_resumed} of {result.shards} shards resumed"
    Console(highlight=False).print(
        f"{summary.described + summary.resumed} descriptors ({settings.kind.name.lower()}) → {escape(str(output))}"
        f"  [{resumed}, {len(summary.skipped)} skipped]"
    )


def _as_dict(result) -> dict:
    """The run summary, the same keys for one process and for Ray (Ray adds its own three)."""
    out = {
        "output": str(result.output),
        "images": result.images,
        "described": result.summary.described,
        "resumed": result.summary.resumed,
        "skipped": len(result.summary.skipped),
        "descriptor": result.settings.kind.name.lower(),
        "rnip": result.settings.rnip,
        "input": format_size(result.input_hw),
        "source": result.source,
    }
    if result.shards is not None:
        out.update(workers=result.settings.workers, shards=result.shards, shards_resumed=result.shards_resumed)
    return out


class _ProgressDisplay:
    """A bar in a terminal; plain progress lines (after 10 s, every 10 s or 5 %) in a pipe or a log.

    Both start at the first `update` (the run is set up: images listed, network loaded).
    """

    COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())

    def __init__(self, title: str, *, quiet: bool) -> None:
        self.title, self.quiet = title, quiet
        self.bar = Progress(*self.COLUMNS, console=err_console, transient=True, disable=not err_console.is_terminal)
        self.task = None
        self.log = None

    def __enter__(self) -> "_ProgressDisplay":
        self.bar.__enter__()
        return self

    def update(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task(self.title, total=total, completed=done)
            if not (err_console.is_terminal or self.quiet):
                self.log = ProgressLog("extract", err_console)
            return
        self.bar.update(self.task, completed=done)
        if self.log:
            self.log.update("describing", done, total)

    def __exit__(self, *exc) -> None:
        if self.log:
            self.log.close()
        self.bar.__exit__(*exc)
