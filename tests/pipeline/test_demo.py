"""`chipq demo` end to end on a VGG-16 with channels / 16 (the download replaced by a local file)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from chipq.cli import main
from chipq.importers.torchvision_layout import vgg_cfg
from chipq.importers.torchvision_vgg import VGG


@pytest.mark.slow  # a few minutes on 2 cores: reconstruction at 224x224, extraction of the 108-image demo set
def test_demo_runs_every_stage_and_its_json_is_the_only_stdout(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    model = tmp_path / "tiny16.pt"
    torch.save(VGG(vgg_cfg("D", 16)).state_dict(), model)
    monkeypatch.setattr("chipq.importers.fetch.fetch_vgg16", lambda folder, progress=None: (model, model))
    from chipq.retrain.config import RetrainConfig

    monkeypatch.setattr("chipq.pipeline.demo.RetrainConfig", lambda: RetrainConfig(steps=2, samples=16))  # fewer steps
    monkeypatch.setattr(sys, "argv", ["chipq", "demo", "-o", str(tmp_path / "demo"), "--json"])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    assert info.value.code in (0, None), captured.err
    data = json.loads(captured.out)  # nothing else on stdout
    assert data["exact"] and data["onnx_identical"] and len(data["rows"]) == 3
    assert {row["descriptor"] for row in data["rows"]} == {"float", "byte", "bit"}
    assert (tmp_path / "demo" / "demo.json").is_file()
    # The retrieval set was made into the work folder: 9 photos x 4 tiles, 2 edits of each tile.
    made = tmp_path / "demo" / "retrieval"
    assert (data["database"], data["queries"]) == (36, 72) and data["images"] == str(made)
    assert len(json.loads((made / "groundtruth.json").read_text())) == 72
    for row in data["rows"]:
        assert all(0.0 <= row[f"found_first_{m}"] <= 1.0 for m in ("float", "post-training", "retrained"))
    assert set(data["cpu_seconds"]) == set(data["seconds"]) and data["cpu_seconds"]["compress"] > 0
