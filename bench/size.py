"""Size: blob bytes per mask plan on the real VGG-16, against fp32 and against the paper's formula.

For each plan the model is compressed post-training (calibrated on samples/photos, the blob kept in
the work folder) and measured with `chipq.reports.inspect.summarize`:

- ``blob_bytes``: the whole file (masks, alphas, biases, header, table, padding);
- ``ratio``: fp32 conv weight bytes (58,841,856 for VGG-16; biases left out) / blob bytes;
- the paper's formula beside it: per layer ``r = 32·9 / (9m + 8)`` (one fp32 3x3 kernel against an
  m-bit mask and an 8-bit alpha), and for the whole stack the mask + alpha bytes that formula counts
  (``Σ kernels·(9m + 8) / 8``) and fp32 bytes over them.

Run: ``python bench/size.py [--model vgg16.pt] [--plans 1x13,3x7,1x6] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import common as cm

KERNEL_TAPS = 9
ALPHA_BITS = 8


def paper_bytes(kernels_and_bits: list[tuple[int, int]]) -> float:
    """Mask + alpha bytes of a stack by the paper's count: kernels x (9m + 8) bits, no padding."""
    return sum(k * (KERNEL_TAPS * m + ALPHA_BITS) for k, m in kernels_and_bits) / 8


def measure_plan(model_path: Path, plan: str, work: Path, calib: Path, input_hw: tuple[int, int]) -> dict:
    """One plan's row: the blob's sizes and ratios, and the paper's numbers for the same plan."""
    from chipq.formats.reader import read_blob
    from chipq.reports.inspect import summarize

    blob = cm.ptq_blob(model_path, plan, work, calib, input_hw)
    model = read_blob(blob)
    summary = summarize(model, blob.stat().st_size, crc_ok=True)
    totals = summary["totals"]
    convs = [row for row in summary["layers"] if row["kind"] == "conv"]
    formula = paper_bytes([(row["kernels"], row["mask_bits"]) for row in convs])
    return {
        "plan": plan,
        "mask_bits": [row["mask_bits"] for row in convs],
        "blob_bytes": totals["blob_bytes"],
        "mask_bytes": totals["mask_bytes"],
        "alpha_bytes": totals["alpha_bytes"],
        "bias_bytes": totals["bias_bytes"],
        "overhead_bytes": totals["overhead_bytes"],
        "fp32_weight_bytes": totals["fp32_weight_bytes"],
        "ratio": totals["ratio"],
        "paper_mask_alpha_bytes": formula,
        "paper_ratio": totals["fp32_weight_bytes"] / formula,
        # one entry per mask width, in layer order: {"3": 8.23, "1": 16.94} for 3x7,1x6
        "paper_layer_ratios": {str(row["mask_bits"]): row["paper_ratio"] for row in convs},
        "blob_sha256": cm.sha256_file(blob),
    }


def run(
    model: Path | None = None,
    plans: tuple[str, ...] = cm.PLANS,
    work: Path = cm.DEFAULT_WORK,
    calib: Path | None = None,
    input_hw: tuple[int, int] = (224, 224),
) -> dict:
    """Measure every plan; returns the JSON-ready results."""
    from chipq.quant.calibrate import default_calib_dir

    work = Path(work)
    model_path = cm.resolve_model(model, work)
    calib = Path(calib) if calib else default_calib_dir()
    rows = [measure_plan(model_path, plan, work, calib, input_hw) for plan in plans]
    return {
        "benchmark": "size",
        "machine": cm.machine_info(),
        "model": str(model_path),
        "model_sha256": cm.sha256_file(model_path),
        "calibration": str(calib),
        "vgg16_fp32_bytes": cm.VGG16_FP32_BYTES,
        "plans": rows,
    }


def render(result: dict) -> str:
    """The BENCHMARKS.md section."""
    rows = []
    for row in result["plans"]:
        rows.append(
            [
                f"`{row['plan']}`",
                f"{row['blob_bytes']:,}",
                f"{row['blob_bytes'] / 1e6:.2f} MB",
                f"{row['ratio']:.2f}x",
                f"{row['paper_mask_alpha_bytes'] / 1e6:.2f} MB",
                f"{row['paper_ratio']:.2f}x",
                ", ".join(f"{r:.2f}x ({m}-bit)" for m, r in row["paper_layer_ratios"].items()),
                f"{row['blob_bytes'] - row['paper_mask_alpha_bytes']:,.0f}",
            ]
        )
    fp32 = result["plans"][0]["fp32_weight_bytes"] if result["plans"] else 0
    table = cm.md_table(
        ["plan", "blob bytes", "blob", "ratio vs fp32", "paper formula bytes", "paper ratio",
         "paper r per layer", "blob − formula bytes"],
        rows,
    )  # fmt: skip
    return "\n".join(
        [
            "## Size",
            "",
            f"Post-training blobs of `{Path(result['model']).name}` (calibrated on "
            f"`{Path(result['calibration']).name}/`), fp32 conv weights {fp32:,} bytes (biases not counted). "
            "*ratio vs fp32* divides those bytes by the whole blob file (masks, alphas, 12-bit biases, "
            "header, table, padding); the paper's formula counts masks and alphas only, "
            "`r = 32·9 / (9m + 8)` per layer (8.23x at 3 bits, 16.94x at 1 bit); the last column is what "
            "the file holds beyond that count (biases, header, table, padding).",
            "",
            table,
            "",
            "Paper: VGG-16 with `3x7,1x6`, \"59 MB → 4 MB, 15.1x\".",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="float model (default: the real VGG-16, fetched)")
    parser.add_argument("--plans", default=";".join(cm.PLANS), help="plans separated by ';'")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK)
    parser.add_argument("--results", type=Path, default=cm.RESULTS_DIR)
    args = parser.parse_args(argv)
    cm.set_threads()
    result = run(args.model, tuple(p for p in args.plans.split(";") if p), args.work)
    print(cm.write_result(args.results, "size", result))
    print(render(result))


if __name__ == "__main__":
    sys.exit(main())
