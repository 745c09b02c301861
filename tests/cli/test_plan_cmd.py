"""`chipq plan` and `chipq compress --plan auto`: a plan under the budget, valid for compress, checked."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import run_main as run
from helpers import save_tiny_vgg, write_photos

from chipq.formats.reader import read_blob
from chipq.quant.plan import parse_plan, parse_specs

SIZE = ["--input", "32x32"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A VGG-16-shaped model (channels / 16, 13 convs), calibration and held-out photos."""
    root = tmp_path_factory.mktemp("plan")
    model = save_tiny_vgg(root / "tiny16.pt")
    write_photos(root / "calib", 3, seed=1)
    write_photos(root / "eval", 2, seed=7)
    return model, root / "calib", root / "eval"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHIPQ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_plan_json_fits_the_budget_and_compress_reproduces_its_bytes(files, monkeypatch, capsys, tmp_path, cache):
    model, calib, heldout = files
    code, out, err = run(monkeypatch, capsys, "plan", model, "--budget", "40kB", "--images", calib, "--eval", heldout, *SIZE, "--sens-images", "2", "--paper", "--json")
    assert code == 0, err
    data = json.loads(out)
    names = data["sensitivity"]["layers"]
    assert len(names) == 13
    specs = parse_specs(data["plan"], names)
    assert [s.bits for s in specs] == data["bits"]
    assert [(r["name"], r["mask_bits"], r["alpha_bits"], r["keep"]) for r in data["layers"]] == [
        (n, s.bits, s.alpha_bits, s.keep) for n, s in zip(names, specs)
    ]
    assert data["bytes"] <= data["budget"] == 40_000
    assert data["measured"]["photos"] == 2 and data["measured"]["bytes"] == data["bytes"]
    assert 0 < data["measured"]["cosine"] <= 1 + 1e-6
    assert data["paper_plan"]["plan"] == "3x7,1x6" and data["paper_plan"]["measured"] is not None
    assert data["front"][0]["bytes"] < data["front"][-1]["bytes"]
    assert not data["sensitivity"]["cached"]
    assert len(list((cache / "sensitivity").glob("*.json"))) == 1
    # the plan string is valid for compress, and the blob has exactly the planned size
    blob = tmp_path / "planned.blob"
    code, _, err = run(monkeypatch, capsys, "compress", model, "--plan", data["plan"], "--no-retrain", "--images", calib, *SIZE, "-o", blob, "--json")
    assert code == 0, err
    assert blob.stat().st_size == data["bytes"]
    stored = read_blob(blob).conv_layers()
    assert [(layer.mask_bits, layer.alpha_bits, layer.kept_kernels(), len(layer.region_sizes()) and sum(layer.region_sizes())) for layer in stored] == [
        (r["mask_bits"], r["alpha_bits"], r["kept"], r["bytes"]) for r in data["layers"]
    ]
    # the second run hits the sensitivity cache and finds the same plan
    code, out, err = run(monkeypatch, capsys, "plan", model, "--budget", "40kB", "--images", calib, "--no-measure", *SIZE, "--sens-images", "2", "--json")
    again = json.loads(out)
    assert code == 0 and again["sensitivity"]["cached"] and again["plan"] == data["plan"]
    assert again["measured"] is None


def test_sensitivity_kinds(files, monkeypatch, capsys, cache):
    """reconstructed (the default) and weight-only are separate measurements with separate cache
    entries; a photo folder too small to keep the sensitivity photos out of the reconstruction says
    where they came from (first_image 0); an unknown kind is a one-line error."""
    model, calib, _ = files
    args = ["plan", model, "--budget", "40kB", "--images", calib, "--no-measure", *SIZE, "--sens-images", "1", "--json"]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    rebuilt = json.loads(out)["sensitivity"]
    code, out, err = run(monkeypatch, capsys, *args, "--sensitivity", "weight-only")
    assert code == 0, err
    plain = json.loads(out)["sensitivity"]
    assert (rebuilt["kind"], plain["kind"]) == ("reconstructed", "weight-only")
    assert rebuilt["first_image"] == plain["first_image"] == 0  # 3 photos: all of them fit the layers
    assert rebuilt["cosine"] != plain["cosine"] and not plain["cached"]
    assert len(list((cache / "sensitivity").glob("*.json"))) == 2
    code, out, err = run(monkeypatch, capsys, *args[:-1], "--sensitivity", "exact")
    assert code == 2 and out == "" and "--sensitivity" in err and err.strip().count("\n") == 0


def test_sensitivity_photos_come_after_the_reconstruction_photos():
    from chipq.pipeline.plan import sensitivity_images

    calib = np.zeros((64, 3, 8, 8), np.uint8)
    assert sensitivity_images(calib, 4, "reconstructed") == (32, 36)
    assert sensitivity_images(calib, 4, "weight-only") == (0, 4)
    assert sensitivity_images(calib[:34], 4, "reconstructed") == (0, 4)  # too few: in sample


def test_plan_text_output_and_plot(files, monkeypatch, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    model, calib, heldout = files
    png = tmp_path / "front.png"
    code, out, err = run(monkeypatch, capsys, "plan", model, "--budget", "9x", "--images", calib, "--eval", heldout, *SIZE, "--sens-images", "1", "--plot", png)
    assert code == 0, err
    assert "plan " in out and "Pareto front" in out and "paper 3x7,1x6" in out and "measured" in out
    paper_line = next(line for line in out.splitlines() if "paper 3x7,1x6" in line)
    assert "predicted" in paper_line and "measured" not in paper_line  # measured only with --paper
    assert "per conv layer" in out and "conv5_3" in out and "all payloads" in out
    assert "reconstructed sensitivity on photos 1-1 x 4 views; too few photos" in " ".join(out.split())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_line(files, monkeypatch, capsys, tmp_path):
    model, calib, _ = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, out, err = run(monkeypatch, capsys, "plan", model, "--budget", "40kB", "--images", calib, *SIZE, "--plot", tmp_path / "f.png")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "pip install 'chipq[plan]'".replace("plan", "plot") in err
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize(
    "budget, message",
    [("lots", "expected bytes"), ("0x", "positive"), ("100", "smallest blob")],
)
def test_bad_budgets_are_one_line_errors(files, monkeypatch, capsys, budget, message):
    model, calib, _ = files
    code, out, err = run(monkeypatch, capsys, "plan", model, "--budget", budget, "--images", calib, *SIZE)
    assert code == 2 and out == ""
    assert message in err and err.strip().count("\n") == 0


def test_eval_photos_must_not_be_calibration_photos(files, monkeypatch, capsys):
    model, calib, _ = files
    code, _, err = run(monkeypatch, capsys, "plan", model, "--budget", "40kB", "--images", calib, "--eval", calib, *SIZE)
    assert code == 2 and "calibration" in err


@pytest.mark.parametrize("spelling", [["--budget", "12kB"], ["--plan", "auto", "--budget", "12kB"]])
def test_compress_budget_chooses_a_v2_plan(files, monkeypatch, capsys, tmp_path, spelling):
    """`--budget B` alone (and the old `--plan auto --budget B`): a plan below 1 bit everywhere's
    size, so it must narrow alpha or prune; the blob is v2 and stores what the plan says."""
    model, calib, _ = files
    blob = tmp_path / "auto.blob"
    code, out, err = run(monkeypatch, capsys, "compress", model, *spelling, "--no-retrain", "--images", calib, *SIZE, "-o", blob, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert blob.stat().st_size == summary["blob_bytes"] <= 12_000 < 14_872  # 1 bit everywhere (v1)
    chip = read_blob(blob)
    names = [layer.name for layer in chip.conv_layers()]
    specs = parse_specs(summary["plan"], names)
    assert chip.format_version() == 2 and any(s.uses_v2 for s in specs)
    for layer, spec in zip(chip.conv_layers(), specs):
        assert (layer.mask_bits, layer.alpha_bits) == (spec.bits, spec.alpha_bits)
        assert layer.kept_kernels() == spec.kept(layer.alpha.size)


def test_plan_v1_keeps_to_mask_widths(files, monkeypatch, capsys):
    """--v1: every layer 8-bit alpha, every kernel; a budget only v2 reaches is refused in one line."""
    model, calib, _ = files
    args = ["plan", model, "--images", calib, "--no-measure", *SIZE, "--sens-images", "1", "--v1", "--json"]
    code, out, err = run(monkeypatch, capsys, *args, "--budget", "40kB")
    assert code == 0, err
    data = json.loads(out)
    assert parse_plan(data["plan"], data["sensitivity"]["layers"]) == data["bits"]
    assert data["format_version"] == 1 and data["sensitivity"]["v2"] == []
    code, out, err = run(monkeypatch, capsys, *args, "--budget", "12kB")
    assert code == 2 and out == "" and "smallest blob (1x13)" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize("args", [["--plan", "auto"], ["--plan", "3x7,1x6", "--budget", "4MB"]])
def test_compress_budget_goes_with_auto(files, monkeypatch, capsys, tmp_path, args):
    model, calib, _ = files
    blob = tmp_path / "x.blob"
    code, _, err = run(monkeypatch, capsys, "compress", model, *args, "--no-retrain", "--images", calib, *SIZE, "-o", blob)
    assert code == 2 and "--budget" in err and not blob.exists() and err.strip().count("\n") == 0


def test_each_probe_is_its_own_measurement_for_plan_and_compress(files, monkeypatch, capsys, tmp_path, cache):
    """The default probe (`chipq.quant.PROBE`) and the other one (--probe): two methods and cache
    entries, each a plan under the budget that compress --budget --probe makes too; --probe without
    --budget is refused."""
    from chipq import quant

    other = next(name for name in quant.PROBES if name != quant.PROBE)
    model, calib, _ = files
    args = ["plan", model, "--budget", "12kB", "--images", calib, "--no-measure", *SIZE, "--json"]  # the photos compress measures on
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    default = json.loads(out)
    code, out, err = run(monkeypatch, capsys, *args, "--probe", other)
    assert code == 0, err
    chosen = json.loads(out)
    methods = {quant.PROBE: default["sensitivity"]["method"], other: chosen["sensitivity"]["method"]}
    assert methods["exact"] == "exact" and methods["noise-gain"].startswith("noise-gain:")
    assert chosen["bytes"] <= 12_000 and len(list((cache / "sensitivity").glob("*.json"))) == 2
    blob = tmp_path / "other.blob"
    code, out, err = run(monkeypatch, capsys, "compress", model, "--budget", "12kB", "--probe", other, "--no-retrain", "--images", calib, *SIZE, "-o", blob, "--json")
    assert code == 0, err
    assert json.loads(out)["plan"] == chosen["plan"]
    code, out, err = run(monkeypatch, capsys, "compress", model, "--probe", "noise-gain", "--no-retrain", "--images", calib, *SIZE, "-o", tmp_path / "x.blob")
    assert code == 2 and "--budget" in err and not (tmp_path / "x.blob").exists() and err.strip().count("\n") == 0
