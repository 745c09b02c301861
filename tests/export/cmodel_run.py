"""Run the C model on a model and compare it with the golden executor (shared by the C-model tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from chipq.executor import golden
from chipq.export.registry import layer_outputs
from chipq.formats import errors as E
from chipq.formats.model import ChipModel
from chipq.formats.reader import from_bytes

SANITIZER_ENV = {"ASAN_OPTIONS": "abort_on_error=0:exitcode=86:detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1:exitcode=87"}


def run_c(binary: Path, blob: Path, pixels: Path, out_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), str(blob), str(pixels), str(out_dir)], capture_output=True, text=True, timeout=600, env=env)


def read_outputs(model: ChipModel, out_dir: Path) -> list[np.ndarray]:
    """Every layer's map as chipq_ref wrote it, shaped as the manifest says (a wrong size fails)."""
    maps = []
    for row in layer_outputs(model):
        data = np.fromfile(out_dir / row["file"], dtype=np.uint8)
        assert data.size == int(np.prod(row["shape"])), (row["file"], data.size, row["shape"])
        maps.append(data.reshape(row["shape"]))
    return maps


def assert_equal_to_golden(model: ChipModel, pixels: np.ndarray, maps: list[np.ndarray], where: str = "") -> None:
    gold = golden.run(model, pixels, taps=True)
    assert len(maps) == len(gold) == len(model.layers)
    for layer, c_map, g_map in zip(model.layers, maps, gold):
        assert c_map.shape == g_map.shape, f"{where} {layer.name}: shape {c_map.shape} != {g_map.shape}"
        if not np.array_equal(c_map, g_map):
            count = int((c_map != g_map).sum())
            raise AssertionError(f"{where} layer {layer.name}: {count} of {g_map.size} elements differ from golden")


def run_and_compare(binary: Path, model: ChipModel, blob_bytes: bytes, pixels: np.ndarray, work: Path, env=None) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "m.blob").write_bytes(blob_bytes)
    np.ascontiguousarray(pixels, dtype=np.uint8).tofile(work / "px.u8")
    done = run_c(binary, work / "m.blob", work / "px.u8", work / "out", env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert_equal_to_golden(model, pixels, read_outputs(model, work / "out"), str(work))


def python_verdict(data: bytes) -> str:
    """The Python reader's verdict on a blob: its error type's name, or "ok" (what `--check` prints)."""
    try:
        from_bytes(data)
    except E.FormatError as exc:
        return type(exc).__name__
    return "ok"
