"""What `chipq compress` made, as the plain dict its ``--json`` prints and its table renders."""

from __future__ import annotations

from pathlib import Path

from chipq.quant.compress import CompressResult
from chipq.reports.inspect import summarize


def compress_summary(result: CompressResult, blob_bytes: int, model_path: Path, output: Path, plan: str) -> dict:
    """Per conv layer: shape, setting (mask bits, alpha width, kernels kept), shifts, weight error, the
    stored weight bytes (presence bitmap, alphas, masks: the blob's own regions) and their ratio to
    fp32; the totals; what retraining did."""
    sizes = summarize(result.model, blob_bytes, crc_ok=True)
    rows = [row for row in sizes["layers"] if row["kind"] == "conv"]
    layers = []
    for row, layer, report, frac in zip(rows, result.model.conv_layers(), result.reports, result.act_fracs):
        layers.append(
            {
                "name": layer.name,
                "shape": row["shape"],
                "mask_bits": layer.mask_bits,
                "alpha_bits": layer.alpha_bits,
                "kept_kernels": row["kept_kernels"],
                "kernels": row["kernels"],
                "weight_shift": layer.weight_shift,
                "act_frac": frac,
                "rel_l2": report.rel_l2,
                "sqnr_db": report.sqnr_db,
                "presence_bytes": row["presence_bytes"],
                "mask_alpha_bytes": row["mask_bytes"] + row["alpha_bytes"],
                "ratio": row["actual_ratio"],
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
