"""`chipq inspect BLOB`: what a blob holds and what it costs, layer by layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chipq.cli import app
from chipq.cli.options import flag, format_size, parse_size
from chipq.pipeline.inspect import inspect_blob
from chipq.reports.hwcost import describe_bytes, format_ms, format_rate, parse_hw

_WIDE = 160  # columns when the output is not a terminal (piped, captured): do not wrap the table


_HELP = "\n\n".join(
    [
        "Check BLOB (magic, version, every offset and CRC) and show its layers, sizes and ratios.",
        "Per conv layer: weight shape, mask bits m, bytes of masks / alphas / biases, the paper's ratio "
        "32*9/(9m+8), the actual ratio (fp32 weight bytes / stored mask+alpha bytes), and the signed bits "
        "the worst-case accumulator needs (the chip has 32). Totals compare the fp32 conv weights with "
        "the whole blob file. A chip format v2 blob adds per conv layer the alpha width a, the kept "
        "kernels and their share (a pruned layer stores a presence bitmap and only its present kernels) "
        "and the bytes of the presence bitmap; the actual ratio then counts the bitmap too.",
        "--hw MACS@MHZ adds a cost model (e.g. --hw 256@200: 256 MAC units at 200 MHz): per layer MACs "
        "(present kernels only: the kernel fetch skips a pruned kernel), "
        "weight bits, cycles and SRAM bytes; totals: frames per second, the cost of one NIP descriptor "
        "(4 rotations at the input buffer) and of an RNIP-9 descriptor of a 640x480 photo (9 crops x 4 "
        "rotations at the buffer), weight-ROM and SRAM sizes. Assumptions: every MAC unit busy every "
        "cycle (a conv takes ceil(K*9*H*W / MACS) cycles for its K present kernels); requantisation and max-pool fused into the "
        "conv write-back (0 cycles); weights in on-chip ROM read once per frame, never stalling; SRAM "
        "holds a layer's whole uint8 input and output map; host resizing, cropping and pooling not counted. "
        "It is a bound, not a simulation.",
        "Example: chipq inspect vgg16.blob --input 224x224 --hw 256@200",
        "A damaged or hostile blob is refused with a one-line error and exit code 2.",
    ]
)


@app.command("inspect", help=_HELP, short_help='What is inside a blob: per-layer bits, bytes, ratios, buffers.')
def inspect_command(
    blob: Path = typer.Argument(
        ..., metavar="BLOB", help="A chip blob, e.g. the file `chipq compress` wrote.", show_default=False
    ),
    input_size: Optional[str] = typer.Option(
        None,
        "--input",
        metavar="WxH",
        help=(
            "Also show the activation buffer each layer needs for an input image of this size, "
            "in pixels, width x height (e.g. 224x224 or 640x480): the layer's uint8 input map plus "
            "its output map, and the peak over all layers."
        ),
    ),
    hw_text: Optional[str] = typer.Option(
        None,
        "--hw",
        metavar="MACS@MHZ",
        help=(
            "Add the cost model for MACS multiply-accumulate units at MHZ (e.g. 256@200): cycles per "
            "layer, frames per second, NIP and RNIP-9 (640x480) descriptor cost, ROM and SRAM sizes. "
            "Per-layer rows and the frame rate are at --input (default: the blob's input buffer)."
        ),
    ),
    as_json: bool = flag("--json", help="Print one JSON object (the same numbers, unrounded) instead of tables."
    ),
) -> None:
    """Describe a blob; see `_HELP`."""
    input_hw = parse_size(input_size) if input_size is not None else None
    hw = parse_hw(hw_text) if hw_text is not None else None
    summary = inspect_blob(blob, input_hw, hw)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=_WIDE)
    console.print(_layer_table(summary, str(blob)))
    console.print(_totals_table(summary))
    if hw is not None:
        console.print(_cost_table(summary["hw"]))
        console.print(_cost_totals_table(summary["hw"]))


# the columns a chip format v2 blob adds after "kernels" (a v1 blob's table is unchanged)
_V2_HEADERS = ("a", "kept", "presence B")


def _layer_table(summary: dict[str, Any], blob: str) -> Table:
    buffers = "buffers" in summary
    v2 = summary["format_version"] >= 2
    table = Table(
        title=f"{escape(blob)}: chip format v{summary['format_version']}",
        caption=(
            "paper x = 32*9/(9m+8); actual x = fp32 weight bytes / stored "
            + ("presence+mask+alpha" if v2 else "mask+alpha")
            + " bytes (biases excluded); acc = signed bits of the worst-case accumulator (SPEC 4.5, chip has 32)"
            + ("; a = alpha width; kept = stored kernels (share)" if v2 else "")
            + ("; buffer = uint8 input map + output map" if buffers else "")
        ),
    )
    headers = ["layer", "shape", "m", "kernels", "mask B", "alpha B", "bias B", "paper x", "actual x", "acc"]
    if v2:
        headers[4:4] = _V2_HEADERS
    for header in headers:
        table.add_column(header, justify="left" if header in ("layer", "shape") else "right")
    if buffers:
        table.add_column("buffer B", justify="right")
    for row in summary["layers"]:
        if row["kind"] == "conv":
            cells = [
                escape(row["name"]),
                "x".join(str(n) for n in row["shape"]),
                str(row["mask_bits"]),
                f"{row['kernels']:,}",
                f"{row['mask_bytes']:,}",
                f"{row['alpha_bytes']:,}",
                f"{row['bias_bytes']:,}",
                f"{row['paper_ratio']:.2f}",
                "-" if row["actual_ratio"] is None else f"{row['actual_ratio']:.2f}",
                str(row["acc_bits"]),
            ]
            if v2:
                cells[4:4] = _v2_cells(row)
        else:
            cells = [escape(row["name"]), f"max-pool 2x2, {row['channels']} ch"] + [""] * (len(headers) - 2)
        if buffers:
            cells.append(f"{row['buffer']['in_bytes'] + row['buffer']['out_bytes']:,}")
        table.add_row(*cells)
    return table


def _v2_cells(row: dict[str, Any]) -> list[str]:
    """Alpha width, kept kernels with their share, presence bitmap bytes ("-" for an unpruned layer)."""
    kept = f"{row['kept_kernels']:,} ({row['density']:.0%})" if row["pruned"] else "all"
    presence = f"{row['presence_bytes']:,}" if row["pruned"] else "-"
    return [str(row["alpha_bits"]), kept, presence]


def _totals_table(summary: dict[str, Any]) -> Table:
    totals, spec_in = summary["totals"], summary["input"]
    table = Table(title="totals", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    mean = ",".join(str(v) for v in spec_in["mean"])
    regions = " / ".join(f"{totals[key]:,}" for key in ("mask_bytes", "alpha_bytes", "bias_bytes"))
    rows = [
        ("chip input buffer", f"{format_size((spec_in['height'], spec_in['width']))} {spec_in['channel_order']}"),
        ("pixel mean subtracted", mean),
        ("conv layers / kernels", f"{totals['conv_layers']} / {totals['kernels']:,}"),
        ("fp32 conv weights (bytes)", f"{totals['fp32_weight_bytes']:,}"),
        ("masks + alphas (bits)", f"{totals['mask_alpha_bits']:,}"),
        ("masks / alphas / biases (bytes)", regions),
        *_v2_totals(summary),
        ("header + table + padding (bytes)", f"{totals['overhead_bytes']:,}"),
        ("blob file (bytes)", f"{totals['blob_bytes']:,}"),
        ("ratio fp32 weights / blob", f"{totals['ratio']:.2f}x"),
        ("format version", str(summary["format_version"])),
        ("CRC32", summary["crc"]),
    ]
    if "buffers" in summary:
        buf = summary["buffers"]
        rows.append(
            (
                f"peak activation buffer at {format_size(buf['input_hw'])} (bytes)",
                f"{buf['peak_bytes']:,} ({escape(buf['peak_layer'])})",
            )
        )
        out_hw = format_size(buf["output_hw"])
        rows.append(("output map", f"{out_hw}, {buf['output_bytes']:,} bytes"))
    for what, value in rows:
        table.add_row(what, value)
    return table


def _v2_totals(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The totals rows a chip format v2 blob adds: kept kernels and presence bitmap bytes."""
    if summary["format_version"] < 2:
        return []
    totals = summary["totals"]
    share = totals["kept_kernels"] / totals["kernels"] if totals["kernels"] else 0.0
    return [
        ("kept kernels", f"{totals['kept_kernels']:,} of {totals['kernels']:,} ({share:.1%})"),
        (f"presence bitmaps, {totals['pruned_layers']} pruned layers (bytes)", f"{totals['presence_bytes']:,}"),
    ]


def _cost_table(cost: dict[str, Any]) -> Table:
    frame = f"{cost['frame_hw'][1]}x{cost['frame_hw'][0]}"
    pruned = cost["totals"]["presence_rom_bytes"] > 0
    table = Table(
        title=f"cost model: {cost['macs_per_cycle']} MACs/cycle at {cost['mhz']:g} MHz, {frame} frame",
        caption=("MACs of present kernels only (a pruned kernel is skipped); " if pruned else "")
        + "cycles = ceil(MACs / MACs per cycle), every unit busy; pools fused (0 cycles); "
        "SRAM = uint8 input + output map",
    )
    for header in ("layer", "in map", "MACs", "weight bits", "cycles", "time", "SRAM B"):
        table.add_column(header, justify="left" if header == "layer" else "right")
    for row in cost["layers"]:
        table.add_row(
            escape(row["name"]),
            f"{row['map_hw'][1]}x{row['map_hw'][0]}",
            f"{row['macs']:,}" if row["kind"] == "conv" else "-",
            f"{row['weight_bits']:,}" if row["kind"] == "conv" else "-",
            f"{row['cycles']:,}",
            format_ms(row["ms"]) if row["kind"] == "conv" else "-",
            f"{row['sram_bytes']:,}",
        )
    return table


def _cost_totals_table(cost: dict[str, Any]) -> Table:
    totals = cost["totals"]
    nip, rnip = totals["nip"], totals["rnip"]
    buffer = f"{cost['buffer_hw'][1]}x{cost['buffer_hw'][0]}"
    frame = f"{cost['frame_hw'][1]}x{cost['frame_hw'][0]}"
    photo = f"{rnip['photo_hw'][1]}x{rnip['photo_hw'][0]}"
    table = Table(title="cost model totals", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        (f"MACs per {frame} frame", f"{totals['macs_per_frame']:,}"),
        ("cycles per frame", f"{totals['cycles_per_frame']:,}"),
        ("time per frame", format_ms(totals["ms_per_frame"])),
        (f"frames per second at {frame}", format_rate(totals["frames_per_second"])),
        (f"NIP descriptor ({nip['frames']} rotations at {buffer})", f"{format_ms(nip['ms'])}, {format_rate(nip['per_second'])}"),
        (
            f"RNIP-{rnip['n']} of a {photo} photo ({rnip['crops']} crops x 4 rotations at {buffer})",
            f"{format_ms(rnip['ms'])}, {format_rate(rnip['per_second'])}",
        ),
        ("weight ROM (bits)", f"{totals['weight_rom_bits']:,}"),
        (
            "weight ROM as stored ("
            + ("presence + " if totals["presence_rom_bytes"] else "")
            + "alpha + bias + mask regions)",
            describe_bytes(totals["weight_rom_bytes"]),
        ),
        (f"activation SRAM at {buffer} (peak: {escape(totals['sram_peak_layer'])})", describe_bytes(totals["sram_bytes"])),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table
