"""kill -9 at random moments: the rerun gives the same bytes and nothing is left behind.

For compress (post-training), extract (checkpointed after every image here) and retraining
(checkpointed after every step here, via the hidden --checkpoint-seconds 0), each run is killed
with SIGKILL at seeded random moments of its own reference duration, then run again to the end
(with --resume when a retraining checkpoint exists). The result must equal the uninterrupted
run's bytes, and the folder must hold no temp file (``.NAME.*.tmp``), no checkpoint and no partial
afterwards: a killed run's leftovers are removed by the next successful one.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import corpus
import harness
import pytest
from helpers import write_photos

KILLS = 3
SEED = 16


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = corpus.build_base(tmp_path_factory.mktemp("kill") / "base")
    write_photos(folder / "many", count=10, seed=5)
    return folder


def run(folder: Path, argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        harness.chipq_command() + argv, cwd=folder, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def finish(folder: Path, argv: list[str]) -> float:
    started = time.monotonic()
    process = run(folder, argv)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()
    return time.monotonic() - started


def leftovers(folder: Path, out: str) -> list[str]:
    stale = {f"{out}.ckpt", out[: -len(".npz")] + ".partial.npz" if out.endswith(".npz") else f"{out}.ckpt"}
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name in stale]


def kill_and_rerun(base: Path, tmp_path: Path, argv: list[str], out: str, resume_flag: str | None = None) -> list[str]:
    """Reference run, then KILLS killed runs each followed by a rerun; returns what each kill hit."""
    ref_dir = tmp_path / "ref"
    shutil.copytree(base, ref_dir)
    duration = finish(ref_dir, argv)
    reference = (ref_dir / out).read_bytes()
    rng = random.Random(f"{SEED}:{out}")
    seen = []
    for kill in range(KILLS):
        folder = tmp_path / f"kill{kill}"
        shutil.copytree(base, folder)
        process = run(folder, argv)
        time.sleep(duration * rng.uniform(0.3, 0.95))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        state = sorted(p.name for p in folder.iterdir() if p.name.startswith((".", out.split(".")[0])))
        seen.append(",".join(state) or "nothing")
        again = argv + ([resume_flag] if resume_flag and (folder / f"{out}.ckpt").exists() else [])
        finish(folder, again)
        assert (folder / out).read_bytes() == reference, f"kill {kill}: rerun differs (state after kill: {seen[-1]})"
        assert leftovers(folder, out) == [], f"kill {kill}: left {leftovers(folder, out)}"
    return seen


def test_compress_killed_then_rerun(base, tmp_path):
    argv = ["compress", "model.pt", "--plan", corpus.PLAN, "--calib", "photos", "--input", "32x32", "--no-retrain", "-o", "out.blob"]
    kill_and_rerun(base, tmp_path, argv, "out.blob")


def test_extract_killed_then_resumed(base, tmp_path):
    argv = ["extract", "many", "--blob", "model.blob", "--rnip", "5", "--checkpoint-seconds", "0", "-o", "out.npz"]
    kill_and_rerun(base, tmp_path, argv, "out.npz")


def test_retraining_killed_then_resumed(base, tmp_path):
    argv = [
        "compress", "model.pt", "--plan", corpus.PLAN, "--calib", "photos", "--input", "32x32", "-o", "out.blob",
        "--retrain", "photos", "--steps", "20", "--samples", "16", "--checkpoint-seconds", "0",
    ]  # fmt: skip
    kill_and_rerun(base, tmp_path, argv, "out.blob", resume_flag="--resume")
