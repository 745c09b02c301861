"""PyTorch model files: torchvision-layout state dicts (bare or wrapped) and TorchScript archives.

Pickles are opened with ``torch.load(weights_only=True)``: only tensors and plain containers can be
built, so a pickle that would run code (a saved ``nn.Module`` object, or a hostile ``__reduce__``)
is refused before any of it runs. TorchScript archives are never given to ``torch.jit.load`` (it
runs the archive's code): `chipq.importers.torchscript` reads their tensors as data.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from chipq.floatnet.batchnorm import BN_EPS
from chipq.floatnet.model import FloatStack
from chipq.importers.errors import (
    TensorShapeMismatch,
    TensorTooLarge,
    TruncatedModel,
    UnknownModelFormat,
    UnsafePickle,
    UnsupportedLayer,
    UnsupportedLayout,
)
from chipq.importers.torchscript import read_script_archive
from chipq.importers.torchvision_layout import stack_from_state_dict

MAX_RECORD_BYTES = 512 << 20  # torchvision's VGG classifier weight (25088 x 4096 float32) is 392 MiB
MAX_ARCHIVE_BYTES = 1 << 30  # a whole torchvision VGG-19-BN with its classifier is 549 MiB

# Keys under which training scripts commonly wrap the state dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_MAX_UNWRAP = 2  # e.g. {"model": {"state_dict": ...}}

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def archive_kind(path: Path) -> str:
    """'state' for a torch.save zip archive, 'script' for TorchScript, 'pickle' for a bare pickle."""
    try:
        if not zipfile.is_zipfile(path):
            return "pickle"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise TruncatedModel(f"{path}: unreadable zip archive (truncated or corrupt): {exc}") from None
    # Both put everything under one top folder; TorchScript adds its code and constants.
    if any(name.split("/", 1)[-1] == "constants.pkl" for name in names):
        return "script"
    if any(name.split("/", 1)[-1] == "data.pkl" for name in names):
        return "state"
    raise UnknownModelFormat(f"{path}: a zip archive but not a PyTorch file (no data.pkl)")


def check_declared_sizes(path: Path) -> None:
    """Refuse, from the zip directory alone, an archive whose records could not be VGG tensors.

    A record's declared (uncompressed) size is what torch would allocate to read it, so it is
    checked before torch opens the file: no record may exceed `MAX_RECORD_BYTES` (the largest VGG
    tensor, torchvision's 25088x4096 classifier weight, is 392 MiB) and all of them together
    `MAX_ARCHIVE_BYTES`. A bare pickle (no zip) is bounded by its file size the same way.

    Raises:
        TensorTooLarge: naming the record and its declared size.
    """
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            raise TensorTooLarge(f"{path}: {size} bytes, more than the {MAX_ARCHIVE_BYTES} a VGG state dict needs")
        return
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    total = 0
    for info in infos:
        if info.file_size > MAX_RECORD_BYTES:
            raise TensorTooLarge(
                f"{path}: record {info.filename!r} declares {info.file_size} bytes, more than any VGG "
                f"tensor ({MAX_RECORD_BYTES} at most); refused before reading it"
            )
        total += info.file_size
    if total > MAX_ARCHIVE_BYTES:
        raise TensorTooLarge(f"{path}: records declare {total} bytes in all, more than the {MAX_ARCHIVE_BYTES} a VGG needs")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_pickle(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with its failures turned into one-line chipq errors."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            found = _GLOBAL_RE.search(text)
            needs = f" (it asks for {found.group(1)})" if found else ""
            raise UnsafePickle(
                f"{path}: the pickle needs code to load{needs}; chipq loads tensors only "
                "(torch.load weights_only=True). Save model.state_dict() instead of the model object."
            ) from None
        raise TruncatedModel(f"{path}: cannot unpickle (truncated or corrupt): {_first_line(exc)}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, struct.error... for a cut file
        raise TruncatedModel(f"{path}: cannot read (truncated or corrupt): {_first_line(exc)}") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, path: Path | str = "") -> Mapping[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: bare, or under one of `WRAPPER_KEYS`.

    Non-tensor entries next to the tensors (a step counter, say) are not allowed in a bare state
    dict; in a wrapper they sit beside the state dict and are ignored.
    """
    for _ in range(_MAX_UNWRAP + 1):
        if _is_state_dict(obj):
            return obj
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[key] for key in WRAPPER_KEYS if key in obj), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise UnsupportedLayout(
            f"{path}: no state dict found (a dict with keys {keys}; expected parameter tensors, "
            f"or one of {', '.join(WRAPPER_KEYS)})"
        )
    raise UnsupportedLayout(f"{path}: holds a {type(obj).__name__}, not a state dict")


def _load_script(path: Path) -> FloatStack:
    # Batch norms without a recoverable eps fall back to BN_EPS inside stack_from_state_dict.
    state, bn_eps = read_script_archive(path)
    return _stack(path, state, bn_eps)


def _stack(path: Path, state: Mapping[str, Any], bn_eps: Mapping[int, float] | None = None) -> FloatStack:
    """`stack_from_state_dict` with the file name put in front of its messages."""
    try:
        return stack_from_state_dict(state, bn_eps=bn_eps or BN_EPS, source=path.name)
    except (UnsupportedLayer, UnsupportedLayout, TensorShapeMismatch) as exc:
        raise type(exc)(f"{path}: {exc}") from None


def load_torch(path: str | os.PathLike[str]) -> FloatStack:
    """The `FloatStack` in a PyTorch file (state dict, wrapped state dict, or TorchScript).

    Raises:
        UnsafePickle: the pickle needs code to load.
        TruncatedModel: the file cannot be decoded.
        UnsupportedLayer, UnsupportedLayout, TensorShapeMismatch: not a torchvision-layout VGG.
    """
    path = Path(path)
    kind = archive_kind(path)
    try:
        check_declared_sizes(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TruncatedModel(f"{path}: unreadable zip archive (truncated or corrupt): {exc}") from None
    if kind == "script":
        return _load_script(path)
    return _stack(path, unwrap_state_dict(_load_pickle(path), path))
