"""The export formats and the folder handling they share.

Every format writes into a staging folder beside DIR; `export_blob` adds `chipq-export.json` (the
manifest: chipq version, format, the blob's size and SHA-256, the input contract, every layer's output
file and shape) and then swaps the staging folder in with renames, so a failed export leaves DIR as it
was and never half-written.

DIR may be missing, an empty folder, or a previous export (a folder holding `chipq-export.json`);
a previous export is replaced whole, including anything added to it since (a `make` build, run
outputs). Any other non-empty folder, or a file, is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from chipq import __version__
from chipq.errors import ChipqError, UsageError
from chipq.export import c_model, memimage
from chipq.formats import constants as C
from chipq.formats.errors import FormatError
from chipq.formats.fileio import replace_dir
from chipq.formats.model import ChipModel, ConvLayer, layer_stem
from chipq.formats.reader import from_bytes, load_blob_bytes

MANIFEST = "chipq-export.json"
MANIFEST_KIND = "chipq export"


class ExportFailed(ChipqError):
    """The file system refused to write the export (no permission, disk full, a missing folder)."""


@dataclass(frozen=True)
class ExportFormat:
    """One `--format`: `write(model, blob_bytes, folder)` fills an empty folder and returns a summary.

    The summary (JSON-serialisable) lands in the manifest under the format's name and in `--json`.
    """

    name: str
    help: str
    write: Callable[[ChipModel, bytes, Path], dict[str, Any]]


FORMATS: dict[str, ExportFormat] = {
    "c": ExportFormat("c", c_model.HELP, c_model.export_c),
    **{fmt: ExportFormat(fmt, memimage.HELP[fmt], memimage.writer(fmt)) for fmt in memimage.FORMATS},
}


def layer_outputs(model: ChipModel) -> list[dict[str, Any]]:
    """Every layer's output: index, name, file `<l:02d>_<name>.u8` and (C, H, W), as `verify --vectors` numbers them."""
    height, width, rows = model.input_height, model.input_width, []
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, ConvLayer):
            height, width = height // C.POOL_SIZE, width // C.POOL_SIZE
        rows.append(
            {
                "index": index,
                "name": layer.name,
                "kind": "conv" if isinstance(layer, ConvLayer) else "maxpool",
                "file": f"{layer_stem(index, layer.name)}.u8",
                "shape": [layer.out_channels, height, width],
            }
        )
    return rows


def manifest(model: ChipModel, blob: Path, data: bytes, fmt: str, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": MANIFEST_KIND,
        "chipq_version": __version__,
        "format": fmt,
        "blob": {"path": str(blob), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        "input": {
            "shape": [C.INPUT_CHANNELS, model.input_height, model.input_width],
            "channel_order": C.ChannelOrder(model.channel_order).name,
            "mean": list(model.input_mean),
        },
        "layers": layer_outputs(model),
        fmt: summary,
    }


def is_previous_export(folder: Path) -> bool:
    """Whether `folder` holds a manifest this command wrote."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == MANIFEST_KIND


def check_target(out_dir: Path) -> bool:
    """Refuse a DIR that is a file or someone else's non-empty folder; returns whether it exists."""
    try:
        out_dir.lstat()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a name too long, a loop of links, a file where a folder should be
        raise UsageError(f"-o {str(out_dir)[:120]}: cannot use as the output folder ({exc.strerror or exc})") from None
    if not out_dir.exists():
        if out_dir.is_symlink():
            raise UsageError(f"-o {out_dir}: a dangling symbolic link; choose another folder")
        return False
    if not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder")
    if out_dir.is_symlink():
        raise UsageError(f"-o {out_dir}: a symbolic link; give the folder itself")
    try:
        empty = not any(out_dir.iterdir())
    except OSError as exc:
        raise ExportFailed(f"-o {out_dir}: cannot list it ({exc.strerror or exc})") from None
    if not empty and not is_previous_export(out_dir):
        raise UsageError(
            f"-o {out_dir}: not empty and not a previous chipq export (no {MANIFEST}); "
            "choose a new folder or empty this one"
        )
    return True


def export_blob(blob: Path, fmt: str, out_dir: Path) -> dict[str, Any]:
    """Check `blob` as the reader does, write format `fmt` into `out_dir`; returns the manifest.

    Raises:
        FormatError: the blob is refused (nothing is written).
        UsageError: unknown format, or `out_dir` is a file or a non-empty folder of something else.
        ExportFailed: the file system refused a write; `out_dir` is left as it was.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    blob, out_dir = Path(blob), Path(out_dir)
    data = load_blob_bytes(blob)
    try:
        model = from_bytes(data)  # every check of SPEC 5: a refused blob writes nothing
    except FormatError as exc:
        raise type(exc)(f"{blob}: {exc}") from None
    check_target(out_dir)
    parent = out_dir.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out_dir.name}.export-"))
    except OSError as exc:
        raise ExportFailed(f"-o {out_dir}: cannot create a folder in {parent} ({exc.strerror or exc})") from None
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; an export is for everyone to read
        summary = FORMATS[fmt].write(model, data, staging)
        info = manifest(model, blob, data, fmt, summary)
        (staging / MANIFEST).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        replace_dir(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportFailed(f"-o {out_dir}: cannot write the export ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
