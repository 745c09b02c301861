"""The one error line: cut when a file makes it huge, control characters shown, the option named right."""

from __future__ import annotations

import json

import pytest
from helpers import run_main

from chipq.formats.fileio import FileRefused
from chipq.importers.fetch import check_fetch_paths


def test_a_huge_name_from_a_file_is_cut_and_escaped(monkeypatch, capsys, tmp_path):
    desc = tmp_path / "d.npz"
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"\x1b[31m" + "q" * 5_000_000: ["p.jpg"]}))
    import numpy as np

    from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, save_descriptors

    save_descriptors(desc, DescriptorSet(["p.jpg"], np.eye(1, 4, dtype=np.float32), DescriptorKind.FLOAT, 4, {}))
    code, _, err = run_main(monkeypatch, capsys, "eval", str(desc), "--gt", str(gt))
    assert code == 2 and len(err) < 1200 and "\x1b" not in err and "\\x1b" in err


def test_the_cache_named_by_the_environment_is_called_so(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CHIPQ_CACHE", str(tmp_path / "file"))
    with pytest.raises(FileRefused, match="^CHIPQ_CACHE "):
        check_fetch_paths(tmp_path / "models")
    with pytest.raises(FileRefused, match="^--cache "):
        check_fetch_paths(tmp_path / "models", tmp_path / "file")
