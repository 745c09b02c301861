"""What a blob costs: bytes per layer and region, compression ratios, accumulator headroom, buffers.

`summarize` takes a checked `ChipModel` and returns plain data (ints, floats, strings, lists and
dicts) that the CLI renders as a table or prints as JSON. Nothing here reads files or prints.

Two ratios are reported per conv layer, and they count different things:

- ``paper_ratio`` = 32*9 / (9m + 8): the seed paper's formula, one fp32 3x3 kernel against one
  m-bit mask plus one 8-bit alpha; it ignores biases, any padding and the v2 features (a
  reference point, the same for a layer whatever its alpha width or density).
- ``actual_ratio`` = fp32 weight bytes of the layer (out*in*9*4) / (its presence + mask + alpha
  bytes as stored, padding included); biases are left out on both sides. A pruned kernel (chip
  format v2) costs its presence bit and nothing else; a narrow alpha costs its stored width.

The overall ratio divides the fp32 bytes of all conv weights (weights only; 58,841,856 for VGG-16)
by the whole blob file: biases, header, table and padding all count against it.
"""

from __future__ import annotations

from typing import Any

from chipq.errors import UsageError
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer
from chipq.formats.writer import accumulator_bound

FP32_BYTES = 4


def summarize(
    model: ChipModel, blob_size: int, crc_ok: bool, input_hw: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Sizes, ratios and (with `input_hw`) activation buffers of `model`.

    Args:
        model: a model read from a blob (or about to be written as one).
        blob_size: bytes of the blob file.
        crc_ok: whether every CRC of the blob matched (the reader refuses a blob that fails).
        input_hw: (height, width) of an input image; adds the uint8 activation buffer each layer
            needs (its input map + its output map) and the peak over layers.

    Returns:
        ``{"format_version", "crc", "input", "layers": [...], "totals": {...}}``, plus
        ``"buffers"`` when `input_hw` is given. Every number is an int or a float.

    Raises:
        UsageError: `input_hw` is not positive or does not survive the model's pools.
    """
    bounds = iter(accumulator_bound(model))
    layers = []
    for layer in model.layers:
        layers.append(_conv_row(layer, next(bounds)) if isinstance(layer, ConvLayer) else _pool_row(layer))
    fp32 = sum(row["fp32_bytes"] for row in layers)
    regions = ("mask_bytes", "alpha_bytes", "bias_bytes", "presence_bytes")
    region_totals = {key: sum(row[key] for row in layers) for key in regions}
    convs = model.conv_layers()
    summary: dict[str, Any] = {
        "format_version": model.format_version(),
        "crc": f"ok (header, table, {len(convs)} payloads)" if crc_ok else "FAILED",
        "input": {
            "height": model.input_height,
            "width": model.input_width,
            "channel_order": C.ChannelOrder(model.channel_order).name,
            "mean": [int(v) for v in model.input_mean],
        },
        "layers": layers,
        "totals": {
            "conv_layers": len(convs),
            "kernels": sum(row["kernels"] for row in layers),
            "kept_kernels": sum(row["kept_kernels"] for row in layers),
            "pruned_layers": sum(1 for conv in convs if conv.pruned),
            "fp32_weight_bytes": fp32,
            **region_totals,
            "mask_alpha_bits": sum(row["mask_alpha_bits"] for row in layers),
            "overhead_bytes": blob_size - sum(region_totals.values()),
            "blob_bytes": blob_size,
            "ratio": fp32 / blob_size if blob_size else 0.0,
        },
    }
    if input_hw is not None:
        summary["buffers"] = _buffers(model, layers, input_hw)
    return summary


def _conv_row(layer: ConvLayer, bound: int) -> dict[str, Any]:
    out_ch, in_ch, bits = layer.out_channels, layer.in_channels, layer.mask_bits
    presence_bytes, alpha_bytes, bias_bytes, mask_bytes = layer.region_sizes()
    kernels, kept = out_ch * in_ch, layer.kept_kernels()
    fp32 = kernels * C.KERNEL_TAPS * FP32_BYTES
    return {
        "name": layer.name,
        "kind": "conv",
        "shape": [out_ch, in_ch, C.KERNEL_SIZE, C.KERNEL_SIZE],
        "mask_bits": bits,
        "alpha_bits": layer.alpha_bits,
        "kernels": kernels,
        "kept_kernels": kept,
        "density": kept / kernels,
        "pruned": layer.pruned,
        "presence_bytes": presence_bytes,
        "mask_bytes": mask_bytes,
        "alpha_bytes": alpha_bytes,
        "bias_bytes": bias_bytes,
        # the bits of the stored masks and alphas (v1: kernels * (9m + 8)); padding excluded
        "mask_alpha_bits": kept * (C.KERNEL_TAPS * bits + layer.alpha_bits),
        "fp32_bytes": fp32,
        "paper_ratio": 32 * C.KERNEL_TAPS / (C.KERNEL_TAPS * bits + C.ALPHA_BITS),
        "actual_ratio": _ratio(fp32, presence_bytes + mask_bytes + alpha_bytes),
        # SPEC 4.5: the worst-case |accumulator| and the signed bits it needs (the chip has 32).
        "acc_bound": bound,
        "acc_bits": bound.bit_length() + 1,
    }


def _pool_row(layer: Any) -> dict[str, Any]:
    return {
        "name": layer.name,
        "kind": "maxpool",
        "shape": None,
        "channels": layer.channels,
        "mask_bits": 0,
        "alpha_bits": 0,
        "kernels": 0,
        "kept_kernels": 0,
        "density": None,
        "pruned": False,
        "presence_bytes": 0,
        "mask_bytes": 0,
        "alpha_bytes": 0,
        "bias_bytes": 0,
        "mask_alpha_bits": 0,
        "fp32_bytes": 0,
        "paper_ratio": None,
        "actual_ratio": None,
        "acc_bound": None,
        "acc_bits": None,
    }


def _ratio(fp32: int, stored: int) -> float | None:
    """fp32 bytes over stored bytes; None for a layer that stores no kernel (infinite ratio)."""
    return fp32 / stored if stored else None


def _buffers(model: ChipModel, rows: list[dict[str, Any]], input_hw: tuple[int, int]) -> dict[str, Any]:
    """uint8 input + output map bytes of every layer at `input_hw`; the conv1 input is the pixels."""
    height, width = input_hw
    if height < 1 or width < 1:
        raise UsageError(f"input size {height}x{width} must be at least 1x1")
    channels = C.INPUT_CHANNELS
    peak, peak_layer = -1, ""
    for layer, row in zip(model.layers, rows):
        in_bytes = channels * height * width
        if isinstance(layer, ConvLayer):
            channels = layer.out_channels
        else:
            if height < C.POOL_SIZE or width < C.POOL_SIZE:
                raise UsageError(
                    f"input size {input_hw[0]}x{input_hw[1]} is too small: {layer.name} would get a "
                    f"{height}x{width} map"
                )
            height, width = height // C.POOL_SIZE, width // C.POOL_SIZE
        out_bytes = channels * height * width
        row["buffer"] = {"in_bytes": in_bytes, "out_bytes": out_bytes, "out_hw": [height, width]}
        if in_bytes + out_bytes > peak:
            peak, peak_layer = in_bytes + out_bytes, layer.name
    return {
        "input_hw": list(input_hw),
        "peak_bytes": peak,
        "peak_layer": peak_layer,
        "output_hw": [height, width],
        "output_bytes": channels * height * width,
    }
