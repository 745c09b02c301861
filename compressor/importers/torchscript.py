"""TorchScript archives read as data: the tensors and batch-norm eps, none of the archive's code run.

``torch.jit.load`` is not safe on an untrusted file: it compiles the archive's ``code/`` and calls
the modules' TorchScript ``__setstate__``, which may loop forever or allocate without bound. chipq
never calls it. A TorchScript archive is a zip whose ``data.pkl`` pickles the module tree: each
module is a ``__torch__.…`` object built from a dict of attributes, each tensor a
``torch._utils._rebuild_tensor_v2`` call over a storage record ``data/<key>``. This module unpickles
``data.pkl`` with an unpickler that

- knows a short whitelist of globals, each replaced by a data-only function of ours (tensor
  rebuild, the ``torch.jit._pickle`` list builders, ``OrderedDict``, the storage dtypes);
- turns every ``__torch__.…`` class into an inert `ScriptObject` that keeps its attribute dict and
  runs nothing (a module with a custom ``__setstate__`` stores something other than a dict: its
  weights cannot be read without running its code, so it is refused);
- reads storages from the zip only after checking that the record exists and has exactly the
  bytes the pickle declares, and rebuilds a tensor only when its size and strides stay inside them.

Batch-norm eps is not in the pickle (it is a TorchScript constant): it is read as text from the
module's class source in ``code/`` (``eps : Final[float] = …`` when scripted, the eps argument of
``torch.batch_norm(…)`` when traced). Text is searched, never compiled.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chipq.importers.errors import TensorTooLarge, TruncatedModel, UnsafePickle, UnsupportedLayout

MAX_CODE_BYTES = 1 << 20  # one module's class source; VGG's are a few KB
MAX_DEPTH = 32  # module nesting; torchvision's VGG is 3 deep

# Storage class name -> numpy dtype (little-endian; the archive's byteorder is checked).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_FINAL_EPS = re.compile(r"^\s*eps\s*:\s*Final\[float\]\s*=\s*([-+0-9.eE]+)\s*$", re.MULTILINE)
_TRACED_BN = re.compile(r"torch\.batch_norm\(([^()]*)\)")
_FEATURE_PATH = re.compile(r"(?:^|\.)features\.(\d+)$")


class ScriptObject:
    """A ``__torch__.…`` object of the archive, as data: its qualified class name and its state.

    The unpickler makes one subclass per class name it meets (`_script_class`); instances are
    created by the NEWOBJ opcode without arguments and filled by BUILD.
    """

    qualname = ""
    state: Any = None

    def __setstate__(self, state: Any) -> None:  # the BUILD opcode: keep, never interpret
        self.state = state


class _StorageType:
    """Stands for ``torch.FloatStorage`` etc. in a persistent id: only its dtype is used."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _script_class(qualname: str) -> type:
    """An inert `ScriptObject` subclass standing for the archive's class `qualname`."""
    return type("ScriptObject", (ScriptObject,), {"qualname": qualname, "__new__": lambda cls, *args: object.__new__(cls)})


def _intlist(items: list) -> list:
    return list(items)


def _restore_type_tag(value: Any, type_str: str) -> Any:
    return value


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of one archive with the whitelist above; storages from `archive`."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _script_class(f"{module}.{name}")
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda tensor, requires_grad, hooks: tensor
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist"):
            return _intlist
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return _restore_type_tag
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickle(
            f"{self.path}: the TorchScript archive's data asks for {module}.{name}, which chipq does not "
            "load (it reads tensors only and runs none of the archive's code)"
        )

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise TruncatedModel(f"{self.path}: unexpected persistent id in the TorchScript data ({str(pid)[:80]})")
        _, kind, key, _location, numel = pid
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise TruncatedModel(f"{self.path}: malformed storage reference {key!r}")
        if key in self.storages:
            return self.storages[key]
        record = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(record)
        except KeyError:
            raise TruncatedModel(f"{self.path}: storage record {record!r} is missing") from None
        want = numel * kind.dtype.itemsize
        if info.file_size != want:
            raise TruncatedModel(f"{self.path}: storage record {record!r} has {info.file_size} bytes, the data declares {want}")
        array = np.frombuffer(self.archive.read(record), dtype=kind.dtype)
        self.storages[key] = array
        return array

    def _rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> torch.Tensor:
        if not isinstance(storage, np.ndarray):
            raise TruncatedModel(f"{self.path}: a tensor without a storage in the TorchScript data")
        if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
            raise TruncatedModel(f"{self.path}: malformed tensor record in the TorchScript data")
        if not all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride)):
            raise TruncatedModel(f"{self.path}: a tensor with a negative size, stride or offset")
        count = math.prod(size)
        if count > storage.size:  # a stride of 0 repeats elements: 1 stored float could become 64 GiB
            raise TruncatedModel(f"{self.path}: a tensor of shape {size} has more elements than its storage ({storage.size})")
        if count and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.size:
            raise TruncatedModel(f"{self.path}: a tensor of shape {size} reaches past its storage of {storage.size} elements")
        if not count and offset > storage.size:
            raise TruncatedModel(f"{self.path}: a tensor offset past its storage")
        itemsize = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[offset:] if count else storage[:0], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False
        )
        return torch.from_numpy(np.array(view))  # a copy: contiguous, owned, writable


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    names = archive.namelist()
    pickles = [name for name in names if name.count("/") == 1 and name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise TruncatedModel(f"{path}: a TorchScript archive needs exactly one top-level data.pkl, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    order = f"{prefix}byteorder"
    if order in names and archive.read(order).strip() not in (b"little", b""):
        raise TruncatedModel(f"{path}: a big-endian TorchScript archive; chipq reads little-endian ones")
    return prefix


def read_script_archive(path: Path) -> tuple[dict[str, torch.Tensor], dict[int, float]]:
    """The state dict (``features.0.weight`` …) and the batch-norm eps per ``features`` index.

    The caller has already bounded the archive's declared record sizes
    (`chipq.importers.torch_import.check_declared_sizes`).

    Raises:
        UnsafePickle: the data asks for a global outside the whitelist.
        UnsupportedLayout: a module whose state is not an attribute dict (a custom ``__setstate__``).
        TruncatedModel: a missing or inconsistent record.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive, path)
            root = _ArchiveUnpickler(archive.read(f"{prefix}data.pkl"), archive, prefix, path).load()
            state: dict[str, torch.Tensor] = {}
            classes: dict[str, str] = {}
            _walk(root, "", state, classes, path, 0)
            eps = {
                int(match.group(1)): value
                for module_path, qualname in classes.items()
                if (match := _FEATURE_PATH.search(module_path)) and qualname.rsplit(".", 1)[-1] == "BatchNorm2d"
                and (value := _bn_eps(archive, prefix, qualname)) is not None
            }
    except (UnsafePickle, UnsupportedLayout, TruncatedModel, TensorTooLarge):
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, RecursionError, OSError) as exc:
        raise TruncatedModel(f"{path}: cannot read the TorchScript archive (truncated or corrupt): {type(exc).__name__}") from None
    return state, eps


def _walk(obj: Any, prefix: str, state: dict, classes: dict, path: Path, depth: int) -> None:
    """Collect every tensor attribute of the module tree under its dotted path."""
    if depth > MAX_DEPTH:
        raise UnsupportedLayout(f"{path}: modules nested more than {MAX_DEPTH} deep")
    if not isinstance(obj, ScriptObject):
        raise UnsupportedLayout(f"{path}: the TorchScript data is a {type(obj).__name__}, not a module")
    if not isinstance(obj.state, Mapping):
        raise UnsupportedLayout(
            f"{path}: module {prefix.rstrip('.') or '(root)'} ({obj.qualname[:80]}) keeps its state through its own "
            "__setstate__; its weights cannot be read without running the archive's code, which chipq never does"
        )
    classes[prefix.rstrip(".")] = obj.qualname
    for key, value in obj.state.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, torch.Tensor):
            state[prefix + key] = value
        elif isinstance(value, ScriptObject):
            _walk(value, f"{prefix}{key}.", state, classes, path, depth + 1)


def _bn_eps(archive: zipfile.ZipFile, prefix: str, qualname: str) -> float | None:
    """A BatchNorm2d class's eps from its source text in ``code/`` (None when not found)."""
    module = qualname.rsplit(".", 1)[0]
    record = f"{prefix}code/{module.replace('.', '/')}.py"
    try:
        info = archive.getinfo(record)
    except KeyError:
        return None
    if info.file_size > MAX_CODE_BYTES:
        return None
    text = archive.read(record).decode("utf-8", "replace")
    found = _FINAL_EPS.search(text)
    if found:
        return _finite(found.group(1))
    traced = _TRACED_BN.search(text)
    if traced:
        args = [arg.strip() for arg in traced.group(1).split(",")]
        if len(args) >= 8:
            return _finite(args[7])
    return None


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None
