"""`chipq export BLOB --format hex|coe|h -o DIR` through the real entry point."""

from __future__ import annotations

import json

import pytest
from helpers import run_main

from chipq.formats.writer import to_bytes


@pytest.mark.parametrize("fmt, first", [("hex", "00_conv1_1.alpha.hex"), ("coe", "00_conv1_1.alpha.coe"), ("h", "chipq_rom.h")])
def test_export_writes_the_images_and_the_map(monkeypatch, capsys, tmp_path, tiny_model, fmt, first):
    blob = tmp_path / "m.blob"
    blob.write_bytes(to_bytes(tiny_model))
    code, out, _ = run_main(monkeypatch, capsys, "export", str(blob), "--format", fmt, "-o", str(tmp_path / "rom"), "--json")
    assert code in (0, None)
    data = json.loads(out)  # the export manifest; the memory map under the format name
    assert data["format"] == fmt and data[fmt]["formats"] == [fmt]
    assert (tmp_path / "rom" / first).is_file() and (tmp_path / "rom" / "memory_map.json").is_file()
    assert not [p for p in (tmp_path / "rom").iterdir() if p.name.startswith(".")]  # no staging left


def test_a_damaged_blob_is_one_line_exit_2_and_nothing_written(monkeypatch, capsys, tmp_path, tiny_model):
    data = bytearray(to_bytes(tiny_model))
    data[-1] ^= 1  # payload CRC no longer matches
    blob = tmp_path / "bad.blob"
    blob.write_bytes(bytes(data))
    code, out, err = run_main(monkeypatch, capsys, "export", str(blob), "--format", "hex", "-o", str(tmp_path / "rom"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "crc" in err.lower()
    assert not (tmp_path / "rom").exists()


def test_an_unknown_format_is_refused(monkeypatch, capsys, tmp_path, tiny_model):
    blob = tmp_path / "m.blob"
    blob.write_bytes(to_bytes(tiny_model))
    code, _, err = run_main(monkeypatch, capsys, "export", str(blob), "--format", "bin", "-o", str(tmp_path / "rom"))
    assert code == 2 and "--format" in err and not (tmp_path / "rom").exists()


def test_old_output_names_are_still_accepted(monkeypatch, capsys, tmp_path, tiny_model):
    """export's --out, fetch-vgg16's --out-dir and demo's --workdir/-w are hidden aliases of -o/--output."""
    blob = tmp_path / "m.blob"
    blob.write_bytes(to_bytes(tiny_model))
    code, out, _ = run_main(monkeypatch, capsys, "export", str(blob), "--format", "hex", "--out", str(tmp_path / "rom"), "--json")
    assert code in (0, None) and json.loads(out)["out"] == str(tmp_path / "rom")
    code, _, err = run_main(monkeypatch, capsys, "export", str(blob), "--format", "hex")
    assert code == 2 and "--output" in err and len(err.strip().splitlines()) == 1
    # the aliases parse; naming two different folders with the new and the old name is refused before any work
    for argv in (["fetch-vgg16", "--out-dir", "a", "-o", "b"], ["demo", "--workdir", "a", "--output", "b"], ["demo", "-w", "a", "-o", "b"]):
        code, out, err = run_main(monkeypatch, capsys, *argv)
        assert code == 2 and out == "" and "old name" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()
