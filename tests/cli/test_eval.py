"""`chipq eval`: tables, JSON, warnings and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_main

from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, encode, save_descriptors

# 2-D float descriptors at these angles: cosine order is angular-distance order (see
# tests/test_retrieval.py for the hand-computed APs: 17/24 and 1/4).
ANGLES = {"100000.jpg": 0, "100001.jpg": 10, "100002.jpg": 45, "100100.jpg": 20, "100101.jpg": 35}


def _write(path, angles=ANGLES, kind=DescriptorKind.FLOAT):
    rad = np.radians(list(angles.values()))
    vectors = np.stack([np.cos(rad), np.sin(rad)], axis=1)
    if kind is not DescriptorKind.FLOAT:
        vectors = np.abs(vectors)
    dset = DescriptorSet(list(angles), encode(vectors, kind), kind, 2, {"model": "test"})
    save_descriptors(path, dset)
    return path


def run(monkeypatch, capsys, *args):
    """`chipq eval ARGS` in-process: (exit code, stdout, stderr)."""
    return run_main(monkeypatch, capsys, "eval", *args)


def test_table_and_map(tmp_path, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, _write(tmp_path / "d.npz"), "--gt", "holidays")
    assert code == 0 and err == ""
    assert "100000.jpg" in out and "0.7083" in out and "0.2500" in out
    assert "mAP 0.4792 over 2 queries" in out and "cosine" in out


def test_json(tmp_path, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, _write(tmp_path / "d.npz"), "--gt", "holidays", "--json")
    data = json.loads(out)
    assert code == 0 and data["map"] == pytest.approx((17 / 24 + 1 / 4) / 2)
    assert [(r["query"], r["positives"]) for r in data["results"]] == [("100000.jpg", 2), ("100100.jpg", 1)]
    assert data["metric"] == "cosine" and data["database_size"] == 5


def test_worst_and_bit_metric(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path / "b.npz", kind=DescriptorKind.BIT)
    code, out, _ = run(monkeypatch, capsys, path, "--gt", "holidays", "--worst", "1")
    assert code == 0 and "Hamming" in out and "lowest" in out
    assert out.count(".jpg") == 1


def test_json_ground_truth_queries_and_warnings(tmp_path, monkeypatch, capsys):
    gt = {"100000.jpg": ["100001.jpg", "gone.jpg"], "100100.jpg": ["100101.jpg"]}
    (tmp_path / "gt.json").write_text(json.dumps(gt), encoding="utf-8")
    path = _write(tmp_path / "d.npz")
    code, out, err = run(monkeypatch, capsys, path, "--gt", tmp_path / "gt.json", "--queries", "100000.jpg")
    assert code == 0 and "100100.jpg" not in out and "over 1 queries" in out
    assert "1 positives have no descriptor" in err
    (tmp_path / "q.txt").write_text("# only this one\n100100.jpg\n", encoding="utf-8")
    query_file = tmp_path / "q.txt"
    code, out, _ = run(monkeypatch, capsys, path, "--gt", tmp_path / "gt.json", "--queries", query_file)
    assert code == 0 and "mAP 0.2500 over 1 queries" in out


def test_missing_query_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "gt.json").write_text(json.dumps({"nope.jpg": ["100001.jpg"]}), encoding="utf-8")
    code, out, err = run(monkeypatch, capsys, _write(tmp_path / "d.npz"), "--gt", tmp_path / "gt.json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "queries have no descriptor" in err and "nope.jpg" in err


def test_hostile_descriptor_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 not really")
    code, _, err = run(monkeypatch, capsys, tmp_path / "x.npz", "--gt", "holidays")
    assert code == 2 and err.count("\n") == 1 and "x.npz" in err


def test_names_are_escaped(tmp_path, monkeypatch, capsys):
    angles = {"[bold]q[/bold].jpg": 0, "[red]p.jpg": 5, "z.jpg": 60}
    (tmp_path / "gt.json").write_text(json.dumps({"[bold]q[/bold].jpg": ["[red]p.jpg"]}), encoding="utf-8")
    code, out, _ = run(monkeypatch, capsys, _write(tmp_path / "d.npz", angles), "--gt", tmp_path / "gt.json")
    assert code == 0 and "[bold]q[/bold].jpg" in out and "1.0000" in out


def test_holidays_without_holidays_names(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path / "u.npz", {"ukbench00000.jpg": 0, "ukbench00001.jpg": 5})
    code, _, err = run(monkeypatch, capsys, path, "--gt", "holidays")
    assert code == 2 and "no Holidays query" in err and "2 names" in err


def test_top_k_and_image_root_with_their_old_names(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path / "d.npz")
    for args in (["-k", "2", "--image-root", tmp_path], ["--top", "2", "--images", tmp_path]):
        page = tmp_path / "p.html"
        code, out, err = run(monkeypatch, capsys, path, "--gt", "holidays", "--html", page, "--json", *args)
        assert code == 0, err
        assert json.loads(out)["map"] == pytest.approx((17 / 24 + 1 / 4) / 2) and page.exists()
        page.unlink()
    code, _, err = run(monkeypatch, capsys, path, "--gt", "holidays", "--top-k", "2", "--top", "3")
    assert code == 2 and "--top is the old name of --top-k" in err
    code, _, err = run(monkeypatch, capsys, path, "--gt", "holidays", "-k", "0")
    assert code == 2 and err.count("\n") == 1
