"""The C reader against hostile blobs, built with AddressSanitizer and UBSan (every report fatal).

Blobs: exactly those the Python reader's hostile tests hand to `from_bytes` (tests/formats/
test_reader_hostile.py run with the `record_blobs` plugin: every truncation, every byte flip, the
hypothesis damage, every field lie), plus seeded random mutations of three valid blobs (`mutations`),
most resealed so that the checks behind the CRCs are reached. For every blob:

- Python refuses it -> the C reader refuses it with the same error type (so in the same SPEC 5
  order), exit 2, one line, no sanitizer report;
- Python accepts it -> the C model runs it and every layer equals the golden executor.

All blobs go through one `chipq_ref --check BLOB...` process (fast); then a sample of each refusal
type and the accepted blobs run one process each through the real command line.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from cmodel_run import SANITIZER_ENV, assert_equal_to_golden, python_verdict, read_outputs, run_c
from helpers import REPO
from mutations import mutate

from chipq.formats import constants as C
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes

HERE = Path(__file__).resolve().parent
MUTATIONS = 3000
PER_REFUSAL_TYPE = 4  # single-process runs per Python error type
MAX_RUNS = 250  # accepted blobs run and compared with golden (the rest are checked by --check)
MAX_RUN_PIXELS = 64 * 64  # accepted blobs whose input grew larger are only checked, not run
CHUNK = 400  # blobs per --check process


def base_blobs() -> list[bytes]:
    """samples/tiny.blob (3-bit and 2-bit convs and a pool) and two random models: 5/1-bit, BGR,
    extreme means, odd sizes; 2/4/1-bit with two pools."""
    return [
        (REPO / "samples" / "tiny.blob").read_bytes(),
        to_bytes(random_model([5, 1], [4, "M", 6], (9, 11), seed=3, input_mean=(0, 255, 128), channel_order=C.ChannelOrder.BGR)),
        to_bytes(random_model([2, 4, 1], [3, "M", 5, "M", 2], (12, 10), seed=4)),
    ]


def recorded_blobs(folder: Path) -> list[bytes]:
    """Run the Python hostile-reader tests, saving every blob they give from_bytes."""
    folder.mkdir()
    env = dict(os.environ, CHIPQ_RECORD_BLOBS=str(folder), PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    test = REPO / "tests" / "formats" / "test_reader_hostile.py"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "record_blobs", "-p", "no:cacheprovider", "--hypothesis-seed=0", str(test)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [path.read_bytes() for path in sorted(folder.iterdir())]


def c_verdicts(binary: Path, paths: list[Path]) -> dict[Path, str]:
    """One `--check` process per chunk: each blob's error type, or "ok"."""
    verdicts = {}
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        done = subprocess.run([str(binary), "--check", *map(str, chunk)], capture_output=True, text=True, timeout=600, env=dict(os.environ, **SANITIZER_ENV))
        assert done.returncode in (0, 2) and done.stderr == "", f"exit {done.returncode}:\n{done.stderr[-4000:]}"
        lines = done.stdout.splitlines()
        assert len(lines) == len(chunk), done.stdout[-2000:]
        for path, line in zip(chunk, lines):
            assert line.startswith(f"{path}: "), line
            verdicts[path] = line[len(f"{path}: ") :].split(":")[0].split(",")[0]
    return verdicts


def test_hostile_blobs_are_refused_like_python_and_accepted_ones_equal_golden(chipq_ref_asan, tmp_path):
    recorded = recorded_blobs(tmp_path / "recorded")
    assert len(recorded) > 3000  # every truncation and byte flip of the 768-byte sample, and more
    rng = random.Random(13)
    bases = base_blobs()
    mutated = [mutate(rng.choice(bases), rng) for _ in range(MUTATIONS)]
    blobs = {hashlib.sha1(b).hexdigest(): b for b in recorded + bases + mutated}
    folder = tmp_path / "blobs"
    folder.mkdir()
    paths, expected = [], {}
    for digest, data in sorted(blobs.items()):
        path = folder / f"{digest}.blob"
        path.write_bytes(data)
        paths.append(path)
        expected[path] = python_verdict(data)

    got = c_verdicts(chipq_ref_asan, paths)
    wrong = [(p.name, expected[p], got[p]) for p in paths if got[p] != expected[p]]
    assert not wrong, f"{len(wrong)} of {len(paths)} blobs judged differently (blob, python, C): {wrong[:10]}"
    by_type = defaultdict(list)
    for path in paths:
        by_type[expected[path]].append(path)
    assert len(by_type) >= 20, sorted(by_type)  # the mix reaches most of SPEC 5's checks
    assert {"ok", "AccumulatorOverflow", "PayloadCrcMismatch", "ChainMismatch", "NonZeroPadding"} <= set(by_type)

    # The real command line, one process each: refusals exit 2 with one line and write nothing.
    pixels = tmp_path / "px.u8"
    pixels.write_bytes(bytes(3 * 32 * 32))
    env = dict(os.environ, **SANITIZER_ENV)
    for error, group in sorted(by_type.items()):
        if error == "ok":
            continue
        for path in group[:PER_REFUSAL_TYPE]:
            done = run_c(chipq_ref_asan, path, pixels, tmp_path / "never", env)
            assert done.returncode == 2, (path.name, done.returncode, done.stderr[-3000:])
            assert done.stderr.startswith(f"chipq_ref: {error}: ") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "never").exists()

    # Accepted blobs run on random pixels of their input size and equal golden on every layer.
    picks = np.random.default_rng(0)
    (tmp_path / "out").mkdir()
    runs = 0
    for path in by_type["ok"]:
        model = from_bytes(path.read_bytes())
        if model.input_height * model.input_width > MAX_RUN_PIXELS or runs >= MAX_RUNS:
            continue
        image = picks.integers(0, 256, (3, model.input_height, model.input_width), dtype=np.uint8)
        image_path = tmp_path / f"{path.stem}.u8"
        image.tofile(image_path)
        out = tmp_path / "out" / path.stem
        done = run_c(chipq_ref_asan, path, image_path, out, env)
        assert done.returncode == 0 and done.stderr == "", (path.name, done.stderr[-3000:])
        assert_equal_to_golden(model, image, read_outputs(model, out), path.name)
        runs += 1
    assert runs >= 100, runs
    print(f"{len(paths)} blobs ({len(recorded)} recorded, {MUTATIONS} mutations): {len(by_type) - 1} refusal types, "
          f"{len(by_type['ok'])} accepted, {runs} of them run and compared with golden")
