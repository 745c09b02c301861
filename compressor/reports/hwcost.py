"""A first-order cost model of the chip: cycles, frame rate, descriptor cost, ROM and SRAM sizes.

`chipq inspect BLOB --hw MACS@MHZ` reports it. The model is a bound that states what it assumes, not
a simulation:

- MACS multiply-accumulate units, each doing one ``alpha*M x activation`` product per cycle at
  MHZ, all busy every cycle: a conv layer of K stored kernels on an H x W map takes
  ``ceil(K*9*H*W / MACS)`` cycles. K is O x I, or in a pruned layer (chip format v2, SPEC 3.5) the
  present kernels: the kernel fetch skips a pruned kernel, so it costs no MAC and no cycle.
- Requantisation (shift, ReLU, saturation) and the 2x2 max-pool are fused into the write-back of
  the conv before them: 0 extra cycles.
- Weights sit in on-chip ROM (the blob's presence, alpha, bias and mask regions; SPEC.md section 7;
  ``ConvLayer.region_sizes``) and every
  word is read once per frame, kernel-stationary as `rtl/chipq_conv_engine.v` does: ROM bandwidth
  never stalls the MACs.
- Activations sit in on-chip SRAM holding a layer's whole uint8 input map and output map at once
  (ping-pong); no off-chip traffic. The SRAM size is the peak of input + output map over the
  layers at the chip's input buffer size (the conv1 input is counted as 8-bit pixels; the chip
  subtracts the mean on the fly).
- A descriptor costs only its chip frames: NIP = 4 rotations of the image at the buffer size; RNIP-N
  of a W x H photo = (its crop count, `chipq.retrieval.rois.rnip_count`) x 4 rotations at the buffer size.
  Host-side resizing, cropping and pooling are not counted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from chipq.errors import UsageError
from chipq.formats import constants as C
from chipq.formats.model import ChipModel, ConvLayer
from chipq.retrieval.rois import rnip_count

_HW = re.compile(r"^\s*(\d{1,7})\s*@\s*(\d{1,5}(?:\.\d{1,6})?)\s*$")
MAX_MACS = 1 << 20
MAX_MHZ = 10_000.0
ROTATIONS = 4  # NIP and RNIP both run the four quarter turns
RNIP_PHOTO = (480, 640)  # (height, width) of the photo the RNIP figure is given for
RNIP_N = 9


@dataclass(frozen=True)
class Hardware:
    """MAC units working in parallel and their clock."""

    macs: int
    mhz: float

    @property
    def label(self) -> str:
        return f"{self.macs}@{self.mhz:g}"


def parse_hw(text: str) -> Hardware:
    """``"256@200"`` -> Hardware(macs=256, mhz=200.0).

    >>> parse_hw("256@200"), parse_hw(" 9 @ 12.5 ").mhz
    (Hardware(macs=256, mhz=200.0), 12.5)

    Raises:
        UsageError: not MACS@MHZ, or a value out of range.
    """
    match = _HW.match(text)
    if not match:
        raise UsageError(f"--hw {text!r}: expected MACS@MHZ, e.g. 256@200 (256 MAC units at 200 MHz)")
    macs, mhz = int(match.group(1)), float(match.group(2))
    if not 1 <= macs <= MAX_MACS:
        raise UsageError(f"--hw {text}: MACS must be 1..{MAX_MACS}")
    if not 0 < mhz <= MAX_MHZ:
        raise UsageError(f"--hw {text}: MHZ must be above 0 and at most {MAX_MHZ:g}")
    return Hardware(macs, mhz)


def layer_costs(model: ChipModel, hw: Hardware, frame_hw: tuple[int, int]) -> list[dict[str, Any]]:
    """Per layer at an input of `frame_hw` (height, width): MACs, weight bits, cycles, SRAM bytes.

    Raises:
        UsageError: the frame does not survive the model's pools.
    """
    height, width = frame_hw
    channels = C.INPUT_CHANNELS
    rows = []
    for layer in model.layers:
        in_bytes = channels * height * width
        if isinstance(layer, ConvLayer):
            out_ch, kept = layer.out_channels, layer.kept_kernels()
            macs = kept * C.KERNEL_TAPS * height * width
            row = {
                "name": layer.name,
                "kind": "conv",
                "map_hw": [height, width],
                "macs": macs,
                "kept_kernels": kept,
                "weight_bits": _weight_bits(layer),
                "weight_rom_bytes": sum(layer.region_sizes()),
                "cycles": -(-macs // hw.macs),
            }
            channels = out_ch
        else:
            if height < C.POOL_SIZE or width < C.POOL_SIZE:
                raise UsageError(f"input {frame_hw[1]}x{frame_hw[0]} is too small: {layer.name} would get {height}x{width}")
            row = {"name": layer.name, "kind": "maxpool", "map_hw": [height, width], "macs": 0, "kept_kernels": 0,
                   "weight_bits": 0, "weight_rom_bytes": 0, "cycles": 0}  # fused into the previous conv's write-back
            height, width = height // C.POOL_SIZE, width // C.POOL_SIZE
        row["sram_bytes"] = in_bytes + channels * height * width
        row["ms"] = row["cycles"] / (hw.mhz * 1e3)
        rows.append(row)
    return rows


def _weight_bits(layer: ConvLayer) -> int:
    """Bits of a conv's weights without byte padding: presence bitmap, alpha codes, masks, biases."""
    presence = layer.out_channels * layer.in_channels if layer.pruned else 0
    per_kernel = C.KERNEL_TAPS * layer.mask_bits + layer.alpha_bits
    return presence + layer.kept_kernels() * per_kernel + layer.out_channels * C.BIAS_BITS


def hardware_cost(model: ChipModel, hw: Hardware, frame_hw: tuple[int, int] | None = None) -> dict[str, Any]:
    """The cost table of `model` on `hw` (module docstring): per layer and totals.

    Args:
        frame_hw: (height, width) of the frame the per-layer rows and the frame rate are for;
            default the chip's input buffer. Descriptors always run at the buffer size.
    """
    buffer_hw = (model.input_height, model.input_width)
    frame_hw = frame_hw or buffer_hw
    rows = layer_costs(model, hw, frame_hw)
    buffer_rows = rows if frame_hw == buffer_hw else layer_costs(model, hw, buffer_hw)
    frame_cycles = sum(row["cycles"] for row in rows)
    buffer_cycles = sum(row["cycles"] for row in buffer_rows)
    hz = hw.mhz * 1e6
    crops = rnip_count(RNIP_PHOTO[1], RNIP_PHOTO[0], RNIP_N)
    weight_bits = sum(row["weight_bits"] for row in rows)
    peak = max(buffer_rows, key=lambda row: row["sram_bytes"])

    def descriptor(frames: int) -> dict[str, Any]:
        cycles = frames * buffer_cycles
        return {"frames": frames, "cycles": cycles, "ms": cycles / hz * 1e3, "per_second": hz / cycles}

    return {
        "macs_per_cycle": hw.macs,
        "mhz": hw.mhz,
        "frame_hw": list(frame_hw),
        "buffer_hw": list(buffer_hw),
        "layers": rows,
        "totals": {
            "macs_per_frame": sum(row["macs"] for row in rows),
            "cycles_per_frame": frame_cycles,
            "ms_per_frame": frame_cycles / hz * 1e3,
            "frames_per_second": hz / frame_cycles,
            "nip": descriptor(ROTATIONS),
            "rnip": {"n": RNIP_N, "photo_hw": list(RNIP_PHOTO), "crops": crops, **descriptor(crops * ROTATIONS)},
            "weight_rom_bits": weight_bits,
            "weight_rom_bytes": sum(row["weight_rom_bytes"] for row in rows),
            "presence_rom_bytes": sum(conv.region_sizes()[0] for conv in model.conv_layers()),
            "skipped_kernels": sum(conv.out_channels * conv.in_channels - conv.kept_kernels() for conv in model.conv_layers()),
            "sram_bytes": peak["sram_bytes"],
            "sram_peak_layer": peak["name"],
        },
        "assumptions": [
            "every MAC unit busy every cycle: a conv takes ceil(K*9*H*W / MACS) cycles, K its present "
            "kernels (O*I unless pruned: the kernel fetch skips a pruned kernel)",
            "requantisation and max-pool fused into the conv write-back (0 cycles)",
            "weights in on-chip ROM, each word read once per frame (kernel-stationary): no stalls",
            "SRAM holds a layer's whole uint8 input and output map (peak at the input buffer size)",
            "NIP = 4 rotations, RNIP-9 of a 640x480 photo = crops x 4 rotations, each a frame at the "
            "buffer size; host resizing, cropping and pooling not counted",
        ],
    }


def format_rate(per_second: float) -> str:
    """``3.26/s`` or ``0.0926/s``: three significant figures."""
    return f"{per_second:.3g}/s" if per_second < 1000 else f"{per_second:,.0f}/s"


def format_ms(ms: float) -> str:
    """Milliseconds with three significant figures (``12.3 ms``, ``1.23 s``)."""
    return f"{ms / 1000:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"


def describe_bytes(count: int) -> str:
    """``3,914,104 B (3.73 MiB)``."""
    if count < 1024:
        return f"{count:,} B"
    exponent = min(int(math.log(count, 1024)), 3)
    return f"{count:,} B ({count / 1024**exponent:.3g} {['B', 'KiB', 'MiB', 'GiB'][exponent]})"
