"""What `chipq compress` made, as the plain dict its ``--json`` prints and its table renders."""

from __future__ import annotations

from pathlib import Path

from chipq.quant.compress import CompressResult
from chipq.reports.inspect import summarize


def compress_summary(result: CompressResult, blob_bytes: int, model_path: Path, output: Path, plan: str) -> dict:
    """Per conv layer: shape, mask bits, shifts, weight error and ratio; the totals; what retraining did."""
    sizes = summarize(result.model, blob_bytes, crc_ok=True)
    rows = [row for row in sizes["layers"] if row["kind"] == "conv"]
    layers = []
    for row, layer, report, frac in zip(rows, result.model.conv_layers(), result.reports, result.act_fracs):
        packed = row["mask_alpha_bits"] / 8  # masks + alphas at the paper's 9m + 8 bits per kernel
        layers.append(
            {
                "name": layer.name,
                "shape": row["shape"],
                "mask_bits": layer.mask_bits,
                "weight_shift": layer.weight_shift,
                "act_frac": frac,
                "rel_l2": report.rel_l2,
                "sqnr_db": report.sqnr_db,
                "mask_alpha_bytes": packed,
                "ratio": row["fp32_bytes"] / packed,
            }
        )
    return {
        "model": str(model_path),
        "blob": str(output),
        "plan": plan,
        "calibration_images": result.calib_count,
        "layers": layers,
        "fp32_weight_bytes": sizes["totals"]["fp32_weight_bytes"],
        "blob_bytes": blob_bytes,
        "ratio": sizes["totals"]["ratio"],
        "retrain": result.retrain,
    }
