"""The C model as a library a testbench links: `make -C` builds libchipq.a, chipq_ref and chipq_example
warning-free; the example's output equals golden; the status codes carry the Python reader's names.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from cmodel_run import SANITIZER_ENV
from helpers import REPO

from chipq.executor import golden
from chipq.formats import errors as E
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes

TINY = REPO / "samples" / "tiny.blob"


def run_example(binary: Path, blob: bytes, pixels: np.ndarray, work: Path, env=None) -> subprocess.CompletedProcess:
    work.mkdir(parents=True, exist_ok=True)
    (work / "m.blob").write_bytes(blob)
    np.ascontiguousarray(pixels, dtype=np.uint8).tofile(work / "px.u8")
    return subprocess.run([str(binary), str(work / "m.blob"), str(work / "px.u8"), str(work / "out.u8")],
                          capture_output=True, text=True, timeout=600, env=env)


def assert_example_equals_golden(binary: Path, blob: bytes, pixels: np.ndarray, work: Path, env=None) -> None:
    """chipq_run and chipq_run_layer agree (exit 0) and the last map equals the golden executor's."""
    model = from_bytes(blob)
    done = run_example(binary, blob, pixels, work, env)
    assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
    assert len(done.stdout.splitlines()) == 1 + len(model.layers) and "DIFFERS" not in done.stdout
    want = golden.run(model, pixels, taps=True)[-1]
    got = np.fromfile(work / "out.u8", dtype=np.uint8)
    assert got.size == want.size and np.array_equal(got.reshape(want.shape), want)


def test_make_builds_library_ref_and_example(chipq_ref):
    folder = chipq_ref.parent
    for name in ("libchipq.a", "chipq_ref", "chipq_example"):
        assert (folder / name).is_file(), name


def test_the_example_equals_golden_on_the_sample_blob(chipq_ref, tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    assert_example_equals_golden(chipq_ref.parent / "chipq_example", TINY.read_bytes(), pixels, tmp_path)


def test_the_example_equals_golden_on_v2_and_wide_masks(chipq_ref, tmp_path):
    """Narrow alphas, pruned kernels (one layer with none), every mask width: both inner loops of the conv."""
    rng = np.random.default_rng(5)
    for seed, bits in enumerate([(1, 3, 5), (4, 2, 5), (5, 4, 3)]):
        model = random_model(list(bits), [8, "M", 12, 6], (16, 16), seed=seed, alpha_bits=[4, 8, 1], keep=[0.5, 1.0, 0.0])
        pixels = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
        assert_example_equals_golden(chipq_ref.parent / "chipq_example", to_bytes(model), pixels, tmp_path / str(seed))


def test_the_example_under_asan_ubsan(chipq_ref_asan, tmp_path):
    pixels = np.random.default_rng(4).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    example = chipq_ref_asan.parent / "chipq_example"
    assert_example_equals_golden(example, TINY.read_bytes(), pixels, tmp_path, env=SANITIZER_ENV)


def test_the_example_reports_a_refusal_by_the_readers_name(chipq_ref, tmp_path):
    blob = bytearray(TINY.read_bytes())
    blob[0] ^= 0xFF
    done = run_example(chipq_ref.parent / "chipq_example", bytes(blob), np.zeros((3, 32, 32), np.uint8), tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("chipq_example: BadMagic: "), done.stderr


def test_status_names_are_the_python_readers_error_classes(chipq_ref):
    """chipq.h's codes 1.. are every FormatError subclass, by name; then OutOfMemory and BadArgument."""
    done = subprocess.run([str(chipq_ref), "--status-names"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    names = [line.split(" ", 1)[1] for line in done.stdout.splitlines()]
    codes = [int(line.split(" ", 1)[0]) for line in done.stdout.splitlines()]
    assert codes == list(range(len(names)))
    python = {cls.__name__ for cls in vars(E).values() if isinstance(cls, type) and issubclass(cls, E.FormatError) and cls is not E.FormatError}
    assert names[0] == "OK" and names[-2:] == ["OutOfMemory", "BadArgument"]
    assert set(names[1:-2]) == python


@pytest.mark.slow
def test_the_example_equals_golden_on_the_real_vgg16(chipq_ref, real_vgg16_blob, tmp_path):
    """The real `3x7,1x6` VGG-16 on a real photo at 224x224: the example's last map equals golden's."""
    from chipq.images import load_image, resize

    model = from_bytes(real_vgg16_blob)
    image = resize(load_image(REPO / "samples" / "photos" / "china.jpg"), (model.input_height, model.input_width))
    pixels = np.ascontiguousarray(image.transpose(2, 0, 1))
    assert_example_equals_golden(chipq_ref.parent / "chipq_example", real_vgg16_blob, pixels, tmp_path)
