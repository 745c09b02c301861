"""Read a float VGG from a file into a `FloatStack`: PyTorch (.pt/.pth, TorchScript) or ONNX.

Model files are untrusted. Pickles load with ``torch.load(weights_only=True)`` (tensors and plain
containers only); ONNX external data must stay inside the model's folder. Each refusal is a
`errors.ModelImportError` subclass with a one-line message.

The format is chosen by content first (a zip archive or a pickle is PyTorch), then by extension
(``.onnx``). The importer modules are imported on demand so that reading a .pt never imports onnx.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from chipq.floatnet.model import FloatStack
from chipq.formats import constants as C
from chipq.formats.fileio import FileRefused, open_regular
from chipq.importers.errors import ModelNotFound, NonFiniteWeights, TruncatedModel, UnknownModelFormat, WeightOutOfRange

ZIP_MAGIC = b"PK\x03\x04"  # torch.save (since 1.6) and TorchScript write zip archives
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
PICKLE_PROTO = 0x80  # the PROTO opcode that starts every pickle of protocol 2 and later
TORCH_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".tar", ".ckpt", ".bin"})
ONNX_SUFFIXES = frozenset({".onnx"})


def detect_format(path: str | os.PathLike[str]) -> str:
    """'torch' or 'onnx' for an existing file, from its first bytes, then its extension.

    Raises:
        ModelNotFound: missing path or not a regular file.
        TruncatedModel: an empty file.
        UnknownModelFormat: neither format.
    """
    path = Path(path)
    try:
        with open_regular(path, "model") as handle:
            head = handle.read(4)
    except FileRefused as exc:
        raise ModelNotFound(str(exc)) from None
    if not head:
        raise TruncatedModel(f"{path}: empty file")
    if head in (ZIP_MAGIC, EMPTY_ZIP_MAGIC) or head[0] == PICKLE_PROTO:
        return "torch"
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in TORCH_SUFFIXES:
        # Every torch.save output starts with a zip or pickle header; this one does not.
        raise TruncatedModel(
            f"{path}: a {suffix} file without a zip or pickle header: corrupt or not PyTorch"
        )
    raise UnknownModelFormat(
        f"{path}: unknown model format (not a PyTorch zip/pickle; ONNX files must end in .onnx)"
    )


def load_model(path: str | os.PathLike[str]) -> FloatStack:
    """The float conv stack stored in `path` (see the module docstring for the formats).

    Raises:
        ModelImportError: any subclass, one line naming the file and what is wrong.
    """
    kind = detect_format(path)
    if kind == "torch":
        from chipq.importers.torch_import import load_torch

        stack = load_torch(path)
    else:
        from chipq.importers.onnx_import import load_onnx

        stack = load_onnx(path)
    check_finite(stack, path)
    return stack


# The largest weight the chip can hold: alpha at its cap times the largest 5-bit mask level, shift 0.
MAX_WEIGHT = C.ALPHA_MAX * (2**C.MAX_MASK_BITS - 1)
# A bias beyond what a 32-bit accumulator holds even at 0 fraction bits cannot be carried either.
MAX_BIAS = C.ACC_MAX


def check_finite(stack: FloatStack, path: str | os.PathLike[str]) -> None:
    """Refuse a model with a NaN, infinite or out-of-range weight or bias, naming the file and the layer.

    Out of range: a weight above `MAX_WEIGHT` in magnitude, or a bias above `MAX_BIAS`. No chip
    model can represent them, and the float arithmetic of the reconstruction would overflow on them.
    """
    for conv in stack.conv_layers():
        for what, values, limit in (("weight", conv.weight, MAX_WEIGHT), ("bias", conv.bias, MAX_BIAS)):
            bad = ~np.isfinite(values)
            if bad.any():
                raise NonFiniteWeights(
                    f"{path}: layer {conv.name}: {int(bad.sum())} {what} values are NaN or infinite"
                )
            peak = float(np.max(np.abs(values))) if values.size else 0.0
            if peak > limit:
                raise WeightOutOfRange(
                    f"{path}: layer {conv.name}: a {what} of magnitude {peak:.3g}, beyond the {limit:,} "
                    f"the chip can hold; not a trained VGG's {what}s"
                )


__all__ = ["detect_format", "load_model"]
