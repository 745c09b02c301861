"""`chipq extract --workers N` on a local Ray cluster: same file as one process, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import write_photos
from typer.testing import CliRunner

from chipq.cli import app
from chipq.retrieval.descriptors import load_descriptors

pytest.importorskip("ray", reason="Ray is an optional part: pip install 'chipq[ray]'")

runner = CliRunner()
CHIPQ = Path(sys.executable).with_name("chipq")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _same(a: Path, b: Path) -> None:
    x, y = load_descriptors(a), load_descriptors(b)
    assert x.names == y.names
    assert x.codes.dtype == y.codes.dtype and np.array_equal(x.codes, y.codes)
    assert x.kind == y.kind and x.metadata == y.metadata


def _run(*args, timeout=300):
    return subprocess.run([str(CHIPQ), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_two_workers_equal_one_process_with_a_skipped_image(tiny_vgg_files, tmp_path):
    _, blob, photos = tiny_vgg_files
    folder = tmp_path / "imgs"
    write_photos(folder, count=7, seed=5)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8not a jpeg")
    single, ray_out = tmp_path / "s.npz", tmp_path / "r.npz"
    done = _run("extract", folder, "--blob", blob, "-d", "byte", "--rnip", "5", "-o", single, "--json")
    assert done.returncode == 0, done.stderr
    one = json.loads(done.stdout)
    done = _run("extract", folder, "--blob", blob, "-d", "byte", "--rnip", "5", "--workers", "2", "--shard-size", "3", "-o", ray_out, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    shared = set(one) - {"output"}  # the same summary keys and values, Ray adds its own
    assert {k: summary[k] for k in shared} == {k: one[k] for k in shared}
    assert summary["shards"] == 3 and summary["skipped"] == 1 and summary["described"] == 7
    assert "skipped broken.jpg" in done.stderr
    _same(single, ray_out)
    assert not (tmp_path / "r.shards").exists()


def test_every_image_skipped_exits_2_and_writes_nothing_as_one_process(tiny_vgg_files, tmp_path):
    _, blob, _ = tiny_vgg_files
    folder = tmp_path / "imgs"
    folder.mkdir()
    for index in range(3):
        (folder / f"broken{index}.jpg").write_bytes(b"\xff\xd8not a jpeg")
    for extra in ([], ["--workers", "1", "--shard-size", "2"]):
        out = tmp_path / f"out{len(extra)}.npz"
        done = _run("extract", folder, "--blob", blob, "-o", out, *extra)
        assert done.returncode == 2, done.stderr
        # progress lines (a slow Ray start prints them after 10 s), then the one error line
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("chipq extract: ")]
        assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
        assert "no image could be used (3 listed, 3 skipped" in lines[0] and "nothing written" in lines[0]
        assert not out.exists() and not (tmp_path / f"out{len(extra)}.shards").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_float_model_on_one_worker_equals_one_process(tiny_vgg_files, tmp_path):
    pt, _, photos = tiny_vgg_files
    single, ray_out = tmp_path / "s.npz", tmp_path / "r.npz"
    assert _run("extract", photos, "--model", pt, "--size", "32x32", "-o", single).returncode == 0
    done = _run("extract", photos, "--model", pt, "--size", "32x32", "--workers", "1", "-o", ray_out)
    assert done.returncode == 0, done.stderr
    _same(single, ray_out)


def test_kill_9_then_resume_gives_the_same_file(tiny_vgg_files, tmp_path):
    _, blob, _ = tiny_vgg_files
    folder = tmp_path / "many"
    write_photos(folder, count=160, seed=9)
    out = tmp_path / "r.npz"
    shards = tmp_path / "r.shards"
    args = [str(CHIPQ), "extract", str(folder), "--blob", str(blob), "--workers", "2", "--shard-size", "1", "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(shards.glob("shard-*.npz"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
        proc.wait(timeout=60)
    left = len(list(shards.glob("shard-*.npz")))
    assert 3 <= left < 160 and not out.exists() and (shards / "manifest.json").exists()

    # Another setting: refused, the shards kept.
    refused = _run("extract", folder, "--blob", blob, "--workers", "2", "--shard-size", "1", "-d", "bit", "-o", out)
    assert refused.returncode == 2 and "--descriptor changed" in refused.stderr and refused.stderr.count("\n") == 1
    assert len(list(shards.glob("shard-*.npz"))) == left

    resumed = _run("extract", folder, "--blob", blob, "--workers", "2", "--shard-size", "1", "-o", out, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["shards_resumed"] >= left and summary["resumed"] + summary["described"] == 160
    single = tmp_path / "s.npz"
    assert _run("extract", folder, "--blob", blob, "-o", single).returncode == 0
    _same(single, out)
    assert not shards.exists()


def test_without_ray_workers_is_a_one_line_install_hint(tiny_vgg_files, tmp_path, monkeypatch):
    _, blob, photos = tiny_vgg_files
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    result = runner.invoke(app, ["extract", str(photos), "--blob", str(blob), "--workers", "2", "-o", str(tmp_path / "d.npz")])
    assert result.exit_code != 0 and "pip install 'chipq[ray]'" in str(result.exception)
    assert not (tmp_path / "d.npz").exists() and not (tmp_path / "d.shards").exists()
