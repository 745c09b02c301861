"""`chipq inspect` and the summary behind it (`chipq.reports.inspect.summarize`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_main
from typer.testing import CliRunner

from chipq.cli import app
from chipq.errors import UsageError
from chipq.formats.reader import from_bytes
from chipq.formats.synthetic import VGG16_CONFIG, VGG16_PLAN_3X7_1X6, random_model
from chipq.formats.writer import to_bytes
from chipq.reports.inspect import summarize

CHIPQ = Path(sys.executable).parent / "chipq"
WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def vgg16():
    model = random_model(VGG16_PLAN_3X7_1X6, VGG16_CONFIG)
    return model, len(to_bytes(model))


# --- summarize ------------------------------------------------------------------------------------


def test_vgg16_totals_and_ratios(vgg16):
    model, size = vgg16
    summary = summarize(model, size, crc_ok=True)
    totals = summary["totals"]
    assert totals["fp32_weight_bytes"] == 58_841_856
    assert totals["mask_alpha_bits"] == 31_255_104
    assert totals["bias_bytes"] == 4224 * 12 // 8
    assert totals["blob_bytes"] == size and totals["ratio"] == pytest.approx(58_841_856 / size)
    assert 15.0 <= totals["ratio"] < 15.1
    parts = ("mask_bytes", "alpha_bytes", "bias_bytes", "overhead_bytes")
    assert sum(totals[key] for key in parts) == size
    convs = [row for row in summary["layers"] if row["kind"] == "conv"]
    assert [round(row["paper_ratio"], 2) for row in convs] == [8.23] * 7 + [16.94] * 6
    # Whole bytes in every layer here, so the stored ratio equals the paper's.
    assert all(row["actual_ratio"] == pytest.approx(row["paper_ratio"]) for row in convs)
    assert convs[0]["shape"] == [64, 3, 3, 3] and convs[-1]["kernels"] == 512 * 512
    assert all(row["acc_bits"] <= 32 for row in convs)
    assert summary["crc"].startswith("ok") and summary["format_version"] == 1
    assert "buffers" not in summary


def test_vgg16_buffers_at_224(vgg16):
    model, size = vgg16
    summary = summarize(model, size, crc_ok=True, input_hw=(224, 224))
    first = summary["layers"][0]["buffer"]
    # conv1_1 reads the 3-plane pixel buffer and writes a 64-plane uint8 map.
    assert (first["in_bytes"], first["out_bytes"]) == (3 * 224 * 224, 64 * 224 * 224)
    buffers = summary["buffers"]
    assert buffers["peak_layer"] == "conv1_2" and buffers["peak_bytes"] == 2 * 64 * 224 * 224
    assert buffers["output_hw"] == [14, 14] and buffers["output_bytes"] == 512 * 14 * 14


def test_buffers_at_640x480_and_too_small(vgg16):
    model, size = vgg16
    assert summarize(model, size, True, input_hw=(640, 480))["buffers"]["output_hw"] == [40, 30]
    with pytest.raises(UsageError, match="pool4 would get a 1x1 map"):
        summarize(model, size, True, input_hw=(8, 8))


# --- the command ----------------------------------------------------------------------------------


def test_table(sample_blob_path):
    result = CliRunner().invoke(app, ["inspect", str(sample_blob_path)], env=WIDE)
    assert result.exit_code == 0, result.output
    expected = ("conv1_1", "8x3x3x3", "pool1", "conv2_1", "8.23", "11.08", "768", "CRC32")
    for text in (*expected, "ok (header, table, 2 payloads)"):
        assert text in result.output
    assert "buffer B" not in result.output and "peak activation" not in result.output


def test_json_is_one_object_with_the_summary(sample_blob_path, sample_blob_bytes):
    result = CliRunner().invoke(app, ["inspect", str(sample_blob_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    expected = summarize(from_bytes(sample_blob_bytes), len(sample_blob_bytes), crc_ok=True)
    assert data == {"blob": str(sample_blob_path), **json.loads(json.dumps(expected))}


def test_input_adds_buffers(sample_blob_path):
    result = CliRunner().invoke(app, ["inspect", str(sample_blob_path), "--input", "32x32", "--json"])
    buffers = json.loads(result.output)["buffers"]
    # conv1_1: 3x32x32 pixels + 8x32x32 out; conv2_1: 8x16x16 in + 16x16x16 out.
    assert buffers == {
        "input_hw": [32, 32],
        "peak_bytes": 3 * 1024 + 8 * 1024,
        "peak_layer": "conv1_1",
        "output_hw": [16, 16],
        "output_bytes": 16 * 256,
    }
    table = CliRunner().invoke(app, ["inspect", str(sample_blob_path), "--input", "32x32"], env=WIDE)
    assert "buffer B" in table.output and "11,264 (conv1_1)" in table.output


@pytest.mark.parametrize("value", ["32", "32x", "axb", "0x32", "32x5000", "-1x4"])
def test_bad_input_size(monkeypatch, capsys, sample_blob_path, value):
    code, _, err = run_main(monkeypatch, capsys, "inspect", str(sample_blob_path), "--input", value)
    assert code == 2 and err.startswith("error: --input") and err.count("\n") == 1


def test_every_truncation_exits_2_with_one_line(monkeypatch, capsys, sample_blob_bytes, tmp_path):
    path = tmp_path / "cut.blob"
    for length in range(len(sample_blob_bytes)):
        path.write_bytes(sample_blob_bytes[:length])
        code, out, err = run_main(monkeypatch, capsys, "inspect", str(path))
        assert (code, out) == (2, "")
        assert err.startswith("error: ") and err.count("\n") == 1
        assert "truncated" in err or "shorter than the 64-byte header" in err


def test_crc_failure_is_refused(monkeypatch, capsys, sample_blob_bytes, tmp_path):
    damaged = bytearray(sample_blob_bytes)
    damaged[700] ^= 0x01  # inside conv2_1's masks
    path = tmp_path / "bad.blob"
    path.write_bytes(bytes(damaged))
    code, out, err = run_main(monkeypatch, capsys, "inspect", str(path))
    assert (code, out) == (2, "")
    assert "layer conv2_1: payload CRC32" in err and err.count("\n") == 1


def test_missing_file(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "inspect", str(tmp_path / "nope.blob"))
    assert code == 2 and "cannot read" in err


@pytest.mark.parametrize("length", [0, 63, 400])
def test_truncations_in_a_real_process(sample_blob_bytes, tmp_path, length):
    path = tmp_path / "cut.blob"
    path.write_bytes(sample_blob_bytes[:length])
    proc = subprocess.run([str(CHIPQ), "inspect", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_real_process_json(sample_blob_path):
    command = [str(CHIPQ), "inspect", str(sample_blob_path), "--json"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["totals"]["blob_bytes"] == 768


def test_a_bad_size_names_the_option_given():
    """`parse_size` names the option the user typed (extract used to report `--input`)."""
    import pytest

    from chipq.cli.options import parse_size
    from chipq.errors import UsageError

    with pytest.raises(UsageError, match="^--size 'foo'"):
        parse_size("foo", "--size")
    with pytest.raises(UsageError, match="^--input 0x5"):
        parse_size("0x5")


def test_input_size_is_reported_width_x_height(sample_blob_path):
    """`--input 64x32` is 64 wide and 32 high, and the report says 64x32 (it said 32x64)."""
    table = CliRunner().invoke(app, ["inspect", str(sample_blob_path), "--input", "64x32"], env=WIDE)
    assert table.exit_code == 0, table.output
    assert "peak activation buffer at 64x32" in table.output and "32x64" not in table.output


# --- chip format v2 -------------------------------------------------------------------------------


@pytest.fixture
def v2_blob(tmp_path):
    """conv1_1 at 5-bit alphas, conv2_1 pruned to 19 of 32 kernels (tests/reports/test_inspect_v2.py)."""
    model = random_model([3, 1], [4, "M", 8], input_hw=(16, 16), seed=1, alpha_bits=[5, 8], keep=[None, 0.5])
    path = tmp_path / "v2.blob"
    path.write_bytes(to_bytes(model))
    return path


def test_v2_table_adds_alpha_width_kept_kernels_and_presence(v2_blob):
    result = CliRunner().invoke(app, ["inspect", str(v2_blob)], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "chip format v2" in out and "presence B" in out and "kept" in out
    conv2 = next(line for line in out.splitlines() if "conv2_1" in line)
    for cell in ("8x4x3x3", "19 (59%)", "25.60"):
        assert cell in conv2
    conv1 = next(line for line in out.splitlines() if "conv1_1" in line)
    assert "all" in conv1 and "8.82" in conv1
    assert "19 of 32" not in out and "31 of 44 (70.5%)" in out
    assert "presence bitmaps, 1 pruned layers (bytes)" in out


def test_v2_json_and_hw(v2_blob):
    result = CliRunner().invoke(app, ["inspect", str(v2_blob), "--json", "--hw", "10@100"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["format_version"] == 2
    assert [row["kept_kernels"] for row in data["layers"]] == [12, 0, 19]
    assert [row["alpha_bits"] for row in data["layers"]] == [5, 0, 8]
    assert data["totals"]["presence_bytes"] == 4 and data["totals"]["blob_bytes"] == 321
    assert data["hw"]["totals"]["macs_per_frame"] == 27_648 + 19 * 9 * 64
    assert data["hw"]["totals"]["weight_rom_bytes"] == 112
    table = CliRunner().invoke(app, ["inspect", str(v2_blob), "--hw", "10@100"], env=WIDE)
    assert "MACs of present kernels only" in table.output and "10,944" in table.output
    assert "weight ROM as stored (presence + alpha + bias + mask regions)" in table.output


def test_v1_table_keeps_its_columns(sample_blob_path):
    """A v1 blob's table has exactly the columns it had before v2 (the new ones are v2-only)."""
    result = CliRunner().invoke(app, ["inspect", str(sample_blob_path)], env=WIDE)
    header = next(line for line in result.output.splitlines() if "layer" in line and "shape" in line)
    cells = [cell.strip() for cell in header.strip().strip("┃").split("┃")]
    assert cells == ["layer", "shape", "m", "kernels", "mask B", "alpha B", "bias B", "paper x", "actual x", "acc"]
    assert "presence" not in result.output and "kept kernels" not in result.output


def test_v1_hw_text_unchanged(sample_blob_path):
    """The cost model's captions of a v1 blob do not mention what only v2 has."""
    result = CliRunner().invoke(app, ["inspect", str(sample_blob_path), "--hw", "10@100"], env=WIDE)
    assert "weight ROM as stored (alpha + bias + mask regions)" in result.output
    assert "present kernels" not in result.output
