"""`chipq compress`: blobs out, retraining with checkpoints, and one-line errors that write nothing."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import run_main, save_tiny_vgg
from PIL import Image

from chipq.formats.reader import read_blob
from chipq.pipeline.compress import checkpoint_path

SIZE = ["--input", "32x32"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A VGG-16-shaped model (channels / 16, 13 convs) saved as a torchvision state dict."""
    return save_tiny_vgg(tmp_path_factory.mktemp("model") / "tiny16.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three 40x48 PNGs with some structure."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    for i in range(3):
        base = np.stack([np.sin(xx / (3 + i) + c) * np.cos(yy / (4 + c)) for c in range(3)], axis=2)
        pixels = np.clip(128 + 100 * base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def run(monkeypatch, capsys, *args):
    """`chipq compress ARGS` in-process: (exit code, stdout, stderr)."""
    return run_main(monkeypatch, capsys, "compress", *args)


def compress_ok(monkeypatch, capsys, *args):
    """Like `run`, for a call that must succeed: its output as ``.out`` and ``.err``."""
    code, out, err = run(monkeypatch, capsys, *args)
    assert code in (0, None), err
    return SimpleNamespace(out=out, err=err)


def test_post_training_blob_and_json(model_file, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.blob"
    captured = compress_ok(monkeypatch, capsys, model_file, "-o", out, "--images", images, *SIZE, "--no-retrain", "--json")
    data = json.loads(captured.out)
    assert data["retrain"] is None and len(data["layers"]) == 13
    assert len(read_blob(out).conv_layers()) == 13


RETRAIN = ["--steps", "3", "--samples", "4"]


def test_retrain_writes_the_blob_and_removes_the_checkpoint(model_file, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.blob"
    args = [model_file, "-o", out, "--images", images, *SIZE, *RETRAIN, "--json"]
    data = json.loads(compress_ok(monkeypatch, capsys, *args).out)
    assert data["retrain"]["steps"] == 3 and data["retrain"]["trained_layers"][0] == "conv4_1"
    assert not checkpoint_path(out).exists()
    first = out.read_bytes()
    out.unlink()
    compress_ok(monkeypatch, capsys, *args)
    assert out.read_bytes() == first  # same seed, same images: same bytes


def test_retrain_table_names_the_trained_layers(model_file, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "t.blob"
    captured = compress_ok(monkeypatch, capsys, model_file, "-o", out, "--images", images, *SIZE, *RETRAIN)
    assert "retrained conv4_1, conv4_2" in captured.out and "descriptor cosine" in captured.out


def test_epochs_count_steps_over_the_cached_samples(model_file, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "e.blob"
    args = [model_file, "-o", out, "--images", images, *SIZE, "--samples", "8", "--epochs", "1", "--json"]
    data = json.loads(compress_ok(monkeypatch, capsys, *args).out)
    assert data["retrain"]["steps"] == 1  # 8 samples / batch 8


def test_ctrl_c_leaves_a_checkpoint_and_resume_finishes_the_same_blob(model_file, images, tmp_path, monkeypatch, capsys):
    from contextlib import contextmanager

    from chipq.cli import compress_cmd
    from chipq.retrain.trainer import Retrainer

    out = tmp_path / "res.blob"
    base = [model_file, "-o", out, "--images", images, *SIZE, "--samples", "4", "--steps", "4"]
    compress_ok(monkeypatch, capsys, *base)
    whole = out.read_bytes()
    out.unlink()

    steps = []
    original = Retrainer.train_step
    monkeypatch.setattr(Retrainer, "train_step", lambda self: steps.append(1) or original(self))

    @contextmanager
    def ctrl_c_after_two_steps(armed=None):  # what the SIGINT handler reports after the user's Ctrl-C
        yield lambda: len(steps) >= 2

    real_interrupt = compress_cmd._deferred_interrupt
    monkeypatch.setattr(compress_cmd, "_deferred_interrupt", ctrl_c_after_two_steps)
    code, _, err = run(monkeypatch, capsys, *base)
    # stderr: the progress bars' last frame (not a terminal), then the one-line error.
    assert code == 130 and "after step 2" in err and "--resume" in err
    assert [line for line in err.splitlines() if "error" in line] == [err.strip().splitlines()[-1]]
    assert checkpoint_path(out).exists() and not out.exists()

    monkeypatch.setattr(Retrainer, "train_step", original)
    monkeypatch.setattr(compress_cmd, "_deferred_interrupt", real_interrupt)
    data = json.loads(compress_ok(monkeypatch, capsys, *base, "--resume", "--json").out)
    assert data["retrain"]["resumed_at_step"] == 2 and data["retrain"]["steps"] == 4
    assert out.read_bytes() == whole and not checkpoint_path(out).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "'--steps'"),  # typed by the parser: its one-line message names the option
        (["--steps", "many"], "'--steps'"),
        (["--steps", "2", "--epochs", "1"], "give one of them"),
        (["--lr", "fast"], "'--lr'"),
        (["--lr", "1"], "1.0 must be between 0 and 1"),
        (["--seed", "-1"], "'--seed'"),
        (["--train-from", "conv9_1"], "no such conv layer"),
    ],
)
def test_bad_retrain_options_fail_in_one_line(model_file, images, tmp_path, monkeypatch, capsys, args, message):
    out = tmp_path / "bad.blob"
    code, outs, err = run(monkeypatch, capsys, model_file, "-o", out, "--images", images, *SIZE, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not checkpoint_path(out).exists()


def test_empty_retrain_folder_fails_in_one_line(model_file, images, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "x.blob"
    code, _, err = run(monkeypatch, capsys, model_file, "-o", out, "--images", empty, *SIZE)
    assert code == 2 and "no JPEG or PNG image in it" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_retrain_options_are_refused_with_no_retrain(model_file, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "y.blob"
    code, _, err = run(monkeypatch, capsys, model_file, "-o", out, "--images", images, *SIZE, "--no-retrain", "--steps", "3")
    assert code == 2 and "--steps is a retraining setting" in err and not out.exists()


def test_retraining_is_the_default_and_old_flags_still_work(model_file, images, tmp_path, monkeypatch, capsys):
    """No flag: Algorithm 1 runs. `--calib D --retrain D` (0.1 scripts) gives the same bytes as `--images D`."""
    new, old = tmp_path / "new.blob", tmp_path / "old.blob"
    data = json.loads(compress_ok(monkeypatch, capsys, model_file, "-o", new, "--images", images, *SIZE, *RETRAIN, "--json").out)
    assert data["retrain"]["steps"] == 3
    compress_ok(monkeypatch, capsys, model_file, "-o", old, "--calib", images, "--retrain", images, *SIZE, *RETRAIN)
    assert old.read_bytes() == new.read_bytes()
    code, _, err = run(monkeypatch, capsys, model_file, "-o", tmp_path / "c.blob", "--images", images, "--retrain", tmp_path, *SIZE)
    assert code == 2 and "different folders" in err


def test_progress_lines_in_a_log(model_file, images, tmp_path):
    """stderr to a file: plain progress lines, no live display."""
    import os
    import subprocess

    log = tmp_path / "log.txt"
    out = tmp_path / "p.blob"
    with log.open("w") as stderr:
        code = subprocess.call(
            [sys.executable, "-c", "from chipq.cli import main; main()", "compress", str(model_file), "-o", str(out),
             "--images", str(images), *SIZE, *RETRAIN], stderr=stderr, stdout=subprocess.DEVNULL,
            env={**os.environ, "CHIPQ_PROGRESS_SECONDS": "0"},
        )  # fmt: skip
    text = log.read_text()
    assert code == 0 and out.exists()
    assert "chipq compress: loading model" in text and "chipq compress: retraining 3/3 (100%)" in text
    assert "\x1b[" not in text  # no terminal control codes


def test_resume_without_checkpoint_and_stale_checkpoint(model_file, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "z.blob"
    base = [model_file, "-o", out, "--images", images, *SIZE, *RETRAIN]
    code, _, err = run(monkeypatch, capsys, *base, "--resume")
    assert code == 2 and "no checkpoint" in err
    checkpoint_path(out).write_bytes(b"old")
    code, _, err = run(monkeypatch, capsys, *base)
    assert code == 2 and "add --resume" in err
    code, _, err = run(monkeypatch, capsys, *base, "--resume")
    assert code == 2 and "cannot read the checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_truncated_pt_fails_in_one_line(model_file, images, tmp_path, monkeypatch, capsys):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(model_file.read_bytes()[:5000])
    out = tmp_path / "cut.blob"
    code, _, err = run(monkeypatch, capsys, cut, "-o", out, "--calib", images, *SIZE)
    assert code == 2 and "cut.pt" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "plan, message",
    [("3x6,1x6", "plan covers 12 layers, the model has 13 conv layers"), ("3x7,6x6", "mask width 6 not in 1..5")],
)
def test_bad_plans_fail_in_one_line(model_file, images, tmp_path, monkeypatch, capsys, plan, message):
    out = tmp_path / "p.blob"
    code, _, err = run(monkeypatch, capsys, model_file, "--plan", plan, "-o", out, "--calib", images, *SIZE)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_empty_calib_folder_fails_in_one_line(model_file, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    out = tmp_path / "c.blob"
    code, _, err = run(monkeypatch, capsys, model_file, "-o", out, "--calib", empty, *SIZE)
    assert code == 2 and "no JPEG or PNG image in it" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


V2_PLAN = "3x2,2a6k60x5,1a4k45x6"


@pytest.mark.parametrize("route", [["--no-retrain"], RETRAIN + ["--prune-from", "20"]])
def test_a_v2_plan_writes_a_v2_blob_with_the_plan_exactly(model_file, images, tmp_path, monkeypatch, capsys, route):
    from chipq.formats import constants as C
    from chipq.quant.plan import parse_specs

    out = tmp_path / "v2.blob"
    compress_ok(monkeypatch, capsys, model_file, "--plan", V2_PLAN, "-o", out, "--images", images, *SIZE, *route, "--json")
    model = read_blob(out)
    specs = parse_specs(V2_PLAN, [layer.name for layer in model.conv_layers()])
    assert model.format_version() == C.FORMAT_V2
    for layer, spec in zip(model.conv_layers(), specs):
        kernels = layer.alpha.size
        assert (layer.mask_bits, layer.alpha_bits) == (spec.bits, spec.alpha_bits)
        assert (layer.kept_kernels() if layer.pruned else kernels) == spec.kept(kernels)


def test_a_v1_plan_as_settings_writes_the_same_bytes(model_file, images, tmp_path, monkeypatch, capsys):
    """`3x7,1x6` and its per-layer list with explicit 8-bit alpha spelled as v2 items give one v1 blob."""
    a, b = tmp_path / "a.blob", tmp_path / "b.blob"
    compress_ok(monkeypatch, capsys, model_file, "-o", a, "--images", images, *SIZE, "--no-retrain")
    compress_ok(monkeypatch, capsys, model_file, "--plan", "3a8k100x7,1a8x6", "-o", b, "--images", images, *SIZE, "--no-retrain")
    assert a.read_bytes() == b.read_bytes() and read_blob(a).format_version() == 1


def test_prune_from_is_refused_without_retraining(model_file, images, tmp_path, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, model_file, "-o", tmp_path / "x.blob", "--images", images, *SIZE, "--no-retrain", "--prune-from", "10")
    assert code == 2 and "--prune-from is a retraining setting" in err
