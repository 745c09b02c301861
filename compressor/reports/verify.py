"""`chipq verify` as library functions: is a blob sound, exact, and faithful to its float model?

Checks, each a small function returning plain data:

- integrity: the reader's checks (structure, ranges, CRCs, accumulator bound) — done by reading;
- exactness: the fast executor equals the golden one on every element of every layer;
- headroom: the largest |accumulator| the golden executor saw per layer, against 2^31 − 1;
- fidelity (with the float model): per conv layer relative error, SQNR and cosine of the
  dequantized integer map against the float map, and the cosine of the NIP descriptors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from chipq.executor import golden
from chipq.executor.fast import FastExecutor
from chipq.floatnet.model import FloatStack
from chipq.floatnet.reference import FloatReference
from chipq.formats import constants as C
from chipq.formats.fileio import atomic_write, check_output_dir
from chipq.formats.model import ChipModel, ConvLayer
from chipq.retrieval.describe import quarter_turns
from chipq.retrieval.pooling import nip_from_maps

Progress = Callable[[str], None]


@dataclass
class LayerAgreement:
    """How one layer's integer output compares with the float model's."""

    name: str
    rel_error: float
    sqnr_db: float
    cosine: float


@dataclass
class VerifyReport:
    """Everything `chipq verify` found; `failures` empty means every check passed."""

    images: int
    golden_images: int
    fast_route: str = ""
    exact_layers: int = 0
    mismatches: list[str] = field(default_factory=list)
    acc_peaks: dict[str, int] = field(default_factory=dict)
    agreement: list[LayerAgreement] = field(default_factory=list)
    nip_cosines: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "golden_images": self.golden_images,
            "fast_route": self.fast_route,
            "exact": not self.mismatches,
            "exact_layers": self.exact_layers,
            "mismatches": self.mismatches,
            "accumulator": {
                name: {"peak": peak, "limit": C.ACC_MAX, "headroom_bits": headroom_bits(peak)}
                for name, peak in self.acc_peaks.items()
            },
            "agreement": [vars(row) for row in self.agreement],
            "nip_cosine": {
                "mean": float(np.mean(self.nip_cosines)) if self.nip_cosines else None,
                "min": float(np.min(self.nip_cosines)) if self.nip_cosines else None,
            },
            "failures": self.failures,
            "ok": not self.failures,
        }


def headroom_bits(peak: int) -> float:
    """Bits to spare between the largest |accumulator| seen and the 32-bit limit.

    >>> round(headroom_bits(2**30), 6)
    1.0
    """
    return math.log2(C.ACC_MAX / peak) if peak > 0 else float(C.ACC_BITS - 1)


def compare_exact(model: ChipModel, fast_taps: list[np.ndarray], golden_taps: list[np.ndarray], image: str) -> list[str]:
    """One line per layer where the fast output differs from the golden one (any element)."""
    problems = []
    for layer, fast, gold in zip(model.layers, fast_taps, golden_taps):
        if fast.shape != gold.shape:
            problems.append(f"{image}: layer {layer.name}: shape {fast.shape} != golden {gold.shape}")
        elif not np.array_equal(fast, gold):
            count = int((fast != gold).sum())
            problems.append(f"{image}: layer {layer.name}: {count} of {gold.size} elements differ")
    return problems


def agreement(name: str, integer_map: np.ndarray, frac: int, float_map: np.ndarray) -> LayerAgreement:
    """Dequantized integer map vs float map: relative L2 error, SQNR (dB) and cosine."""
    q = integer_map.astype(np.float64).ravel() * 2.0**-frac
    f = float_map.astype(np.float64).ravel()
    err = np.linalg.norm(q - f)
    norm_f, norm_q = np.linalg.norm(f), np.linalg.norm(q)
    rel = float(err / norm_f) if norm_f > 0 else float(err > 0)
    sqnr = float(20 * np.log10(norm_f / err)) if err > 0 else float("inf")
    cosine = float(q @ f / (norm_q * norm_f)) if norm_q > 0 and norm_f > 0 else 0.0
    return LayerAgreement(name, rel, sqnr, cosine)


def verify(
    model: ChipModel,
    images: np.ndarray,
    names: list[str],
    *,
    stack: FloatStack | None = None,
    golden_count: int = 1,
    progress: Progress | None = None,
) -> VerifyReport:
    """Run the checks on `images` (uint8 (N, 3, H, W) at the model's input size).

    Args:
        model: the chip model (already read, so integrity holds).
        images: the images; all go through the fast executor, the first `golden_count` also
            through the golden one.
        names: one name per image, for messages.
        stack: the float model, for the fidelity checks (skipped when None).
        golden_count: how many images the (slow) golden executor checks.
        progress: called with a short text as each step starts.
    """
    say = progress or (lambda text: None)
    report = VerifyReport(images=len(images), golden_images=min(golden_count, len(images)))
    fast = FastExecutor(model)
    report.fast_route = fast.route_label
    say("fast executor")
    fast_taps = fast.run(images, taps=True)
    peaks = [0] * len(model.conv_layers())
    reference_executor = golden.GoldenExecutor(model)
    for index in range(report.golden_images):
        say(f"golden executor, image {index + 1}/{report.golden_images}")
        image_peaks: list[int] = []
        gold = reference_executor.run(images[index : index + 1], taps=True, peaks=image_peaks)
        peaks = [max(a, b) for a, b in zip(peaks, image_peaks)]
        report.mismatches += compare_exact(model, [t[index] for t in fast_taps], [t[0] for t in gold], names[index])
    report.exact_layers = len(model.layers) if not report.mismatches else 0
    report.acc_peaks = {layer.name: peak for layer, peak in zip(model.conv_layers(), peaks)}
    if report.mismatches:
        report.failures.append(f"fast executor differs from golden: {report.mismatches[0]}")
    if stack is not None:
        say("float model")
        _fidelity(report, model, stack, images, fast_taps, fast)
    return report


def _fidelity(report, model, stack, images, fast_taps, fast) -> None:
    reference = FloatReference(stack)
    float_taps = reference.run(images, taps=True)
    fracs = model.activation_fracs()
    for layer, taps, frac in zip(model.layers, fast_taps, fracs):
        if isinstance(layer, ConvLayer):
            if layer.name not in float_taps:
                report.failures.append(f"layer {layer.name}: not in the float model")
                continue
            report.agreement.append(agreement(layer.name, taps, frac, float_taps[layer.name]))
    if model.input_height != model.input_width:
        return  # NIP rotations need a square buffer; per-layer agreement still stands
    last_frac = fracs[-1]
    for image in images:
        batch = quarter_turns(image)
        chip = fast.run(batch).astype(np.float32) * np.float32(2.0**-last_frac)
        ref = reference.run(batch)
        a, b = nip_from_maps(list(chip)), nip_from_maps(list(ref))
        report.nip_cosines.append(float(np.dot(a, b)))


def write_vectors(model: ChipModel, images: np.ndarray, names: list[str], out_dir: Path, *, readmemh: bool = False) -> Path:
    """Test vectors for an RTL simulation: every layer's integer input and output per image.

    Layout (README, "Test vectors"): ``out_dir/manifest.json`` and, per image i and layer l,
    ``img<i>/<l:02d>_<name>_in.npy`` / ``_out.npy`` (uint8, or int16 for the conv1 input x0 =
    p − mean), (C, H, W) C-order. Written by the golden executor. With `readmemh`, each array is
    also written as a ``.hex`` beside it (`_save_hex`).
    """
    check_output_dir(out_dir, "test-vector folder", "--vectors")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "chipq test vectors v1", "input_mean": list(model.input_mean), "images": []}
    for index, (image, name) in enumerate(zip(images, names)):
        folder = out_dir / f"img{index}"
        folder.mkdir(exist_ok=True)
        outputs = golden.run(model, image, taps=True)
        x = golden.subtract_mean(image, model.input_mean).astype(np.int16)
        layers = []
        for number, (layer, out) in enumerate(zip(model.layers, outputs)):
            stem = f"{number:02d}_{layer.name}"
            _save_npy(folder / f"{stem}_in.npy", x)
            _save_npy(folder / f"{stem}_out.npy", out)
            row = {"layer": layer.name, "input": f"img{index}/{stem}_in.npy", "output": f"img{index}/{stem}_out.npy"}
            if readmemh:
                _save_hex(folder / f"{stem}_in.hex", x)
                _save_hex(folder / f"{stem}_out.hex", out)
                row.update(input_hex=f"img{index}/{stem}_in.hex", output_hex=f"img{index}/{stem}_out.hex")
            layers.append(row)
            x = out
        _save_npy(folder / "pixels.npy", image)
        entry = {"name": name, "pixels": f"img{index}/pixels.npy", "layers": layers}
        if readmemh:
            _save_hex(folder / "pixels.hex", image)
            entry["pixels_hex"] = f"img{index}/pixels.hex"
        manifest["images"].append(entry)
    path = out_dir / "manifest.json"
    atomic_write(path, json.dumps(manifest, indent=2).encode(), what="test-vector manifest")
    return path


def _save_hex(path: Path, array: np.ndarray) -> None:
    """A `$readmemh` file: one element per line in C order (address ``(c*H + y)*W + x``); uint8 as
    2 hex digits, int16 (the conv1 input x0) as 4 digits of 16-bit two's complement."""
    width = {np.dtype(np.uint8): 8, np.dtype(np.int16): 16}[array.dtype]
    words = np.ascontiguousarray(array).reshape(-1).astype(np.int64) & ((1 << width) - 1)
    fmt = f"{{:0{width // 4}x}}".format
    comment = f"// chipq test vector: {width}-bit words, shape {'x'.join(map(str, array.shape))} (C, H, W), C order\n"
    text = comment + "\n".join(map(fmt, words.tolist())) + "\n"
    atomic_write(path, text.encode("ascii"), what="test vector")


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False), what="test vector")
