"""`chipq compress`: a float VGG-style model in, a chip blob (format v1) out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..compress import DEFAULT_INPUT, calibration_batch, compress, default_calib_dir
from ..formats.writer import write_blob
from ..importers import load_model
from ..plan import parse_plan
from .inspect_cmd import parse_size
from . import app, err_console

_HELP = "\n\n".join(
    [
        "Quantize a float VGG-style model (PyTorch .pt state dict / TorchScript, or ONNX) into a chip "
        "blob: every 3x3 kernel becomes alpha * M (8-bit alpha, 1-5-bit mask M), with a 4-bit weight "
        "shift per layer, 12-bit biases and 8-bit activations whose shifts are calibrated on real images.",
        "PLAN gives the mask bits of each conv layer: runs `3x7,1x6` (3 bits on the first 7 convs, 1 on "
        "the next 6 — the paper's plan), a per-layer list `3,3,3,3,3,3,3,1,1,1,1,1,1`, or names "
        "`conv1_1=3,...,conv5_3=1` covering every conv layer.",
        "The blob is written atomically: it appears whole or not at all. The same model, plan and "
        "calibration images give byte-identical blobs, whether the model comes as .pt or .onnx.",
        "Example: chipq compress vgg16.pt --plan 3x7,1x6 -o vgg16.blob",
    ]
)


@app.command("compress", help=_HELP, short_help='Quantize a float VGG-16 (.pt/.onnx) into a chip blob.')
def compress_command(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Float model: .pt / .pth (state dict or TorchScript) or .onnx.", show_default=False),
    plan_text: str = typer.Option("3x7,1x6", "--plan", "-p", metavar="PLAN", help="Mask bits per conv layer (see above)."),
    output: Path = typer.Option(..., "--output", "-o", metavar="BLOB", help="Where to write the blob.", show_default=False),
    calib: Optional[Path] = typer.Option(
        None,
        "--calib",
        metavar="DIR",
        help="Images (folder, searched recursively, or a list file) for activation calibration. "
        "Default: the photos in samples/photos.",
        show_default=False,
    ),
    input_size: str = typer.Option(
        "224x224", "--input", metavar="WxH", help="The chip's input buffer, width x height; calibration images are resized to it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Compress a model; see `_HELP`."""
    input_hw = parse_size(input_size) if input_size else DEFAULT_INPUT
    calib_dir = calib if calib is not None else default_calib_dir()
    with err_console.status("loading model") as status:
        stack = load_model(model_path).without_trailing_pool()
        bits = parse_plan(plan_text, [layer.name for layer in stack.conv_layers()])
        status.update("reading calibration images")
        images = calibration_batch(calib_dir, input_hw)
        result = compress(stack, bits, images, input_hw, step=lambda text: status.update(text))
        status.update("writing blob")
        write_blob(result.model, output)  # validates, proves the accumulator bound, then renames
    summary = _summary(result, output.stat().st_size, model_path, output, plan_text)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    _render(summary)


def _summary(result, blob_bytes: int, model_path: Path, output: Path, plan: str) -> dict:
    layers = []
    fp32_total = 0
    for layer, report, frac in zip(result.model.conv_layers(), result.reports, result.act_fracs):
        fp32 = layer.out_channels * layer.in_channels * 9 * 4
        packed = layer.out_channels * layer.in_channels * (9 * layer.mask_bits + 8) / 8
        fp32_total += fp32
        layers.append(
            {
                "name": layer.name,
                "shape": [layer.out_channels, layer.in_channels, 3, 3],
                "mask_bits": layer.mask_bits,
                "weight_shift": layer.weight_shift,
                "act_frac": frac,
                "rel_l2": report.rel_l2,
                "sqnr_db": report.sqnr_db,
                "mask_alpha_bytes": packed,
                "ratio": fp32 / packed,
            }
        )
    return {
        "model": str(model_path),
        "blob": str(output),
        "plan": plan,
        "calibration_images": result.calib_count,
        "layers": layers,
        "fp32_weight_bytes": fp32_total,
        "blob_bytes": blob_bytes,
        "ratio": fp32_total / blob_bytes,
    }


def _render(summary: dict) -> None:
    table = Table(title=f"chipq compress {escape(summary['model'])} → {escape(summary['blob'])}")
    for column in ("layer", "shape", "bits", "w shift", "act frac", "rel L2", "SQNR dB", "mask+α bytes", "ratio"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in summary["layers"]:
        table.add_row(
            escape(row["name"]),
            "x".join(str(v) for v in row["shape"]),
            str(row["mask_bits"]),
            str(row["weight_shift"]),
            str(row["act_frac"]),
            f"{row['rel_l2']:.3f}",
            f"{row['sqnr_db']:.1f}",
            f"{row['mask_alpha_bytes']:,.0f}",
            f"{row['ratio']:.2f}x",
        )
    console = Console() if Console().is_terminal else Console(width=120)
    console.print(table)
    console.print(
        f"fp32 conv weights {summary['fp32_weight_bytes']:,} B → blob {summary['blob_bytes']:,} B: "
        f"[bold]{summary['ratio']:.2f}x[/]  (plan {escape(summary['plan'])}, "
        f"{summary['calibration_images']} calibration images)"
    )
