"""`chipq plan MODEL --budget B`: each layer's mask bits, alpha width and kept kernels under a size budget,
by measured sensitivity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chipq.cli import app, err_console
from chipq.cli.options import flag, parse_size
from chipq.cli.progress import status as progress_status
from chipq.errors import UsageError
from chipq.quant import MAX_CALIB_IMAGES  # the sensitivity's photos are among the calibration photos read
from chipq.reports.planner import DEFAULT_SENS_IMAGES, SensitivityKind, SensitivityProbe

_HELP = "\n\n".join(
    [
        "Choose how every conv layer is stored — mask width m (1-5 bits), alpha width a (8, 6, 5 or 4 "
        "bits) and the share of its 3x3 kernels kept (100, 75, 60, 50, 40 or 30 %; the others are "
        "pruned, a presence bitmap marks them) — so that the blob fits BUDGET and the retrieval "
        "descriptor stays as close to the float model's as possible, and show the trade-off. A layer "
        "setting is written BITS[aALPHA][kKEEP]: 3 = 3-bit masks, 8-bit alpha, every kernel; "
        "1a5k40 = 1-bit masks, 5-bit alpha, 40 % of the kernels. Narrower alpha and pruning need chip "
        "format v2; --v1 keeps to v1 settings (mask widths only, 1 bit everywhere is the smallest blob).",
        "1. Sensitivity: for each conv layer and width, only that layer is quantized (the others float, "
        "all with the chip's 8-bit activations) and the NIP descriptor (four quarter turns) and the conv5_3 "
        "map are compared with the float model's on --sens-images calibration photos. By default "
        "(--sensitivity reconstructed) the layer is quantized as post-training compress makes it: fitted "
        "for its output on the first 32 calibration photos, and measured on the photos after those; "
        "--sensitivity weight-only quantizes its float weights alone (faster, measured on the first photos). "
        "The result is cached in $CHIPQ_CACHE/sensitivity (else ~/.cache/chipq), keyed by the weights, the "
        "photos and the settings. Alpha widths and kept shares are measured the same way, each alone, at "
        "1-bit masks on the layers holding at least 2 % of the kernels (conv3_1..conv5_3 of VGG-16), and "
        "added to the mask width's loss. By default (--probe noise-gain) each setting's noise is measured "
        "at its own layer's output and turned into descriptor distance with a few passes of the rest of the "
        "network per layer on 4 of the photos (one for the 1-bit masks, two for alpha at 5 and 4 bits, one for "
        "the fewest kernels): on VGG-16 with 2 cores the first run takes about 7 minutes (5 of them "
        "measuring, 2 the check), later ones read the cache. --probe exact runs the rest of the network once per setting "
        "on every photo: about 16 minutes; its plans were as good in mAP, and at the paper's budget 0.01 "
        "closer to float in cosine post-training (docs/compress.md, plan stability).",
        "2. Allocation: the exact blob size of every plan follows from the format (header, layer table, "
        "8-byte-aligned payloads of presence bitmap, alpha, bias and mask regions); an exact dynamic "
        "programme finds the plan of least predicted loss "
        "(the sum over layers of half the squared descriptor distance each layer adds) under the budget, "
        "and the whole Pareto front of size against predicted cosine.",
        "3. Check: the chosen plan is compressed post-training (as `chipq compress --no-retrain`) and its "
        "mean NIP descriptor cosine to float is measured on held-out photos (--eval, default: the --images "
        "photos after the first 64, which calibration never reads). On a VGG-16 the paper's 3x7,1x6 is "
        "predicted beside it, and with --paper compressed and measured the same way.",
        "BUDGET: bytes (3914104), a size (4MB = 4,000,000 B, 3.5MiB) or a ratio to the fp32 conv weights "
        "(15x). The plan string printed is valid for `chipq compress --plan`; `chipq compress --budget B` "
        "plans and compresses in one go.",
        "Example: chipq plan vgg16.pt --budget 3914104 --json",
        "Example: chipq plan vgg16.pt --budget 2000000 --no-measure",
        "Example: chipq plan vgg16.pt --budget 15x --plot front.png",
        "Example: chipq plan vgg16.pt --budget 3914104 --v1",
    ]
)


@app.command("plan", help=_HELP, short_help="Choose each layer's mask bits, alpha width and kernels under a size budget.")
def plan_command(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Float model: .pt / .pth or .onnx.", show_default=False),
    budget: str = typer.Option(..., "--budget", metavar="B", help="Most blob bytes: 3914104, 4MB, 3.5MiB or a ratio 15x.", show_default=False),
    images_dir: Optional[Path] = typer.Option(
        None, "--images", metavar="DIR", help="Calibration photos (default: the photo set shipped with chipq).", show_default=False
    ),
    eval_dir: Optional[Path] = typer.Option(
        None, "--eval", metavar="DIR", help="Held-out photos for the measured fidelity (default: --images after the first 64).", show_default=False
    ),
    input_size: str = typer.Option("224x224", "--input", metavar="WxH", help="The chip's input buffer, width x height."),
    sens_images: int = typer.Option(
        DEFAULT_SENS_IMAGES, "--sens-images", metavar="N", min=1, max=MAX_CALIB_IMAGES, help="Calibration photos the sensitivity is measured on."
    ),
    sens_kind: SensitivityKind = typer.Option(
        SensitivityKind.reconstructed, "--sensitivity", metavar="KIND", help="How each layer is quantized for the sensitivity: reconstructed or weight-only."
    ),
    probe: SensitivityProbe = typer.Option(
        SensitivityProbe.default(), "--probe", metavar="HOW",
        help="How each setting is measured: noise-gain (its noise at its own layer, a few passes per layer) or exact (a pass of the rest of the network per setting: about three times the time on VGG-16, see above).",
    ),  # fmt: skip
    v1: bool = flag("--v1", help="Chip format v1 settings only: 8-bit alpha and every kernel in every layer."),
    no_measure: bool = flag("--no-measure", help="Skip compressing and measuring the chosen plan."),
    paper: bool = flag("--paper", help="Also compress and measure the paper's 3x7,1x6 on the held-out photos (VGG-16)."),
    no_cache: bool = flag("--no-cache", help="Measure the sensitivity again (and do not store it)."),
    as_json: bool = flag("--json", help="Print the result as one JSON object (key `plan`: the plan string)."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PNG", help="Draw the front, the chosen and the paper's plan.", show_default=False),
) -> None:
    """Plan a model; see `_HELP`."""
    from chipq.formats.fileio import check_output
    from chipq.pipeline.checks import check_plan_inputs

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'chipq[plot]'") from None
        check_output(plot, "plot", "--plot", inputs=[("model", model_path), ("photo folder", images_dir), ("held-out folder", eval_dir)])
    input_hw = parse_size(input_size)
    check_plan_inputs(model_path, images_dir, eval_dir if not no_measure else None)
    # PyTorch loads here, once the request is known to be sound (a bad one is refused in under a second)
    from chipq.pipeline.plan import plan
    from chipq.reports.planner import plot_front

    with progress_status("plan", err_console, quiet=as_json) as shown:
        result, heldout = plan(
            model_path, budget, images=images_dir, eval_dir=eval_dir, input_hw=input_hw, measure=not no_measure,
            sens_images=sens_images, use_cache=not no_cache, kind=sens_kind.value, v2=not v1, measure_paper=paper,
            probe=probe.probe(), status=lambda stage, done=None, total=None: shown.update(stage, done, total),
        )  # fmt: skip
    if plot is not None:
        plot_front(result, plot)
    data = result.to_json()
    data["model"] = str(model_path)
    data["heldout_photos"] = heldout
    if as_json:
        print(json.dumps(data, indent=2))
        return
    _render(data, result, no_measure or not heldout, plot)


def _in_sample(sens: dict) -> str:
    """A note when the reconstructed layers were fitted on the photos the sensitivity was measured on."""
    if sens["kind"] == "reconstructed" and sens["first_image"] == 0:
        return "; too few photos to keep them out of the layers' fit: in sample"
    return ""


def _layer_table(rows: list[dict]) -> Table:
    """The chosen setting of each conv layer: mask bits, alpha width, kernels kept, payload bytes."""
    table = Table(title="the chosen plan, per conv layer")
    for column in ("layer", "m", "a", "keep", "kernels kept", "bytes"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in rows:
        table.add_row(
            escape(row["name"]), str(row["mask_bits"]), str(row["alpha_bits"]), f"{row['keep']} %",
            f"{row['kept']:,} / {row['kernels']:,}", f"{row['bytes']:,}",
        )  # fmt: skip
    table.add_row("all payloads", "", "", "", f"{sum(r['kept'] for r in rows):,}", f"{sum(r['bytes'] for r in rows):,}")
    return table


def _render(data: dict, result, unmeasured: bool, plot: Path | None) -> None:
    from chipq.reports.planner import thin_front

    console = Console() if Console().is_terminal else Console(width=120)
    sens = data["sensitivity"]
    how = "cached" if sens["cached"] else f"measured in {sens['seconds']:.1f} s"
    console.print(f"plan [bold]{escape(data['plan'])}[/]  (chipq compress --plan {escape(data['plan'])})")
    console.print(
        f"blob {data['bytes']:,} B of budget {data['budget']:,} B, ratio {data['ratio']:.2f}x to fp32 conv weights"
    )
    pred = data["predicted"]
    console.print(
        f"predicted: descriptor cosine {pred['cosine']:.4f}, conv5_3 SQNR {pred['sqnr_db']:.1f} dB  "
        f"({sens['kind']} sensitivity on photos {sens['first_image'] + 1}-{sens['first_image'] + sens['images']} "
        f"x {sens['views']} views{_in_sample(sens)}, {how})"
    )
    measured = data["measured"]
    if measured:
        console.print(
            f"measured (post-training, {measured['photos']} held-out photos): mean descriptor cosine "
            f"{measured['cosine']:.4f} (lowest {measured['min_cosine']:.4f})"
        )
    elif unmeasured:
        console.print("measured: skipped (no held-out photos: give --eval DIR)")
    console.print(_layer_table(data["layers"]))
    paper = data["paper_plan"]
    if paper:
        line = f"paper {paper['plan']}: {paper['bytes']:,} B, predicted cosine {paper['predicted']['cosine']:.4f}"
        if paper["measured"]:
            line += f", measured {paper['measured']['cosine']:.4f}"
        console.print(line)
    shown_rows = thin_front(data["front"], plan=data["plan"])
    table = Table(title=f"Pareto front of size against predicted cosine ({len(data['front'])} plans, {len(shown_rows)} shown)")
    for column in ("plan", "bytes", "ratio", "predicted cosine"):
        table.add_column(column, justify="left" if column == "plan" else "right")
    for row in shown_rows:
        mark = " ◀" if row["plan"] == data["plan"] else ""
        table.add_row(escape(row["plan"]) + mark, f"{row['bytes']:,}", f"{row['ratio']:.2f}x", f"{row['predicted_cosine']:.4f}")
    console.print(table)
    if plot is not None:
        console.print(f"front drawn in {escape(str(plot))}")
