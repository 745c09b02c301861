"""`chipq export`: the folder it writes, what it refuses, and that a failed export leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, run_main

import chipq.export.registry as registry
from chipq.export import FORMATS, MANIFEST, ExportFailed, export_blob

TINY = REPO / "samples" / "tiny.blob"
FILES = ["Makefile", "README.md", "SPEC.md", MANIFEST, "chipq.c", "chipq.h", "chipq_example.c", "chipq_ref.c"]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_export_c_writes_a_new_folder(monkeypatch, capsys, tmp_path):
    out = tmp_path / "c"
    code, stdout, err = run_main(monkeypatch, capsys, "export", str(TINY), "--format", "c", "-o", str(out), "--json")
    assert (code or 0, err) == (0, "")
    info = json.loads(stdout)
    assert info["format"] == "c" and info["blob"]["bytes"] == TINY.stat().st_size
    assert [row["file"] for row in info["layers"]] == ["00_conv1_1.u8", "01_pool1.u8", "02_conv2_1.u8"]
    assert [row["shape"] for row in info["layers"]] == [[8, 32, 32], [8, 16, 16], [16, 16, 16]]
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert json.loads((out / MANIFEST).read_text()) == {k: v for k, v in info.items() if k != "out"}
    assert "00_conv1_1.u8  8x32x32" in (out / "README.md").read_text()
    assert leftovers(tmp_path) == []


def test_plain_output_names_the_files_and_the_build(monkeypatch, capsys, tmp_path):
    code, stdout, _ = run_main(monkeypatch, capsys, "export", str(TINY), "-f", "c", "-o", str(tmp_path / "c"))
    assert (code or 0) == 0 and "chipq_ref.c" in stdout and "make -C" in stdout


def test_an_empty_folder_and_a_previous_export_are_replaced(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    export_blob(TINY, "c", out)  # empty: used
    (out / "chipq_ref").write_bytes(b"an old build")  # build products and run outputs of the old export
    (out / "run").mkdir()
    export_blob(TINY, "c", out)  # a previous export: replaced whole
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert leftovers(tmp_path) == []


def test_a_foreign_folder_or_a_file_is_refused_and_left_alone(monkeypatch, capsys, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, _, err = run_main(monkeypatch, capsys, "export", str(TINY), "--format", "c", "-o", str(foreign))
    assert code == 2 and "not empty and not a previous chipq export" in err and err.count("\n") == 1
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (foreign / MANIFEST).write_text('{"kind": "something else"}')  # a manifest of another tool
    assert run_main(monkeypatch, capsys, "export", str(TINY), "-f", "c", "-o", str(foreign))[0] == 2
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = run_main(monkeypatch, capsys, "export", str(TINY), "-f", "c", "-o", str(a_file))
    assert code == 2 and "not a folder" in err and a_file.read_text() == "x"


def test_a_bad_blob_writes_nothing(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.blob"
    bad.write_bytes(TINY.read_bytes()[:-1])
    code, _, err = run_main(monkeypatch, capsys, "export", str(bad), "-f", "c", "-o", str(tmp_path / "c"))
    assert code == 2 and "truncated" in err
    code, _, err = run_main(monkeypatch, capsys, "export", str(tmp_path / "missing.blob"), "-f", "c", "-o", str(tmp_path / "c"))
    assert code == 2 and "cannot read" in err
    assert not (tmp_path / "c").exists() and leftovers(tmp_path) == []


def test_an_unknown_format_is_a_usage_error(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "export", str(TINY), "-f", "verilog", "-o", str(tmp_path / "c"))
    assert code == 2 and "verilog" in err
    assert not (tmp_path / "c").exists()


def test_a_failed_write_leaves_the_old_export_and_no_staging(monkeypatch, tmp_path):
    out = tmp_path / "c"
    export_blob(TINY, "c", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(model, blob, folder):
        (folder / "half.c").write_text("int main(")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(FORMATS, "c", registry.ExportFormat("c", "broken", broken))
    with pytest.raises(ExportFailed, match="No space left on device"):
        export_blob(TINY, "c", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(ExportFailed):
        export_blob(TINY, "c", tmp_path / "new")
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


def test_a_new_format_is_one_dict_entry(monkeypatch, tmp_path):
    """How the memory-image formats plug in: an entry in FORMATS, nothing else."""

    def notes(model, blob, folder):
        (folder / "layers.txt").write_text("\n".join(layer.name for layer in model.layers))
        return {"files": ["layers.txt"]}

    monkeypatch.setitem(FORMATS, "txt", registry.ExportFormat("txt", "layer names", notes))
    info = export_blob(TINY, "txt", tmp_path / "t")
    assert info["txt"] == {"files": ["layers.txt"]} and (tmp_path / "t" / "layers.txt").read_text() == "conv1_1\npool1\nconv2_1"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [MANIFEST, "layers.txt"]
