"""`chipq demo`'s printed table: one row per model, a column per descriptor kind, a legend that says
what each column means and which way is better, and the CPU seconds beside the wall seconds."""

from __future__ import annotations

import re

from chipq.cli.demo_cmd import KIND_COLUMNS, MODEL_ROWS, _render
from chipq.reports.demo import DemoResult


def _result() -> DemoResult:
    rows = []
    for kind, shift in (("float", 0.0), ("byte", 0.01), ("bit", 0.1)):
        rows.append({
            "method": "NIP", "descriptor": kind,
            "map_float": 0.8123 - shift, "map_post-training": 0.6012 - shift, "map_retrained": 0.7034 - shift,
            "found_first_float": 0.75, "found_first_post-training": 0.5, "found_first_retrained": 0.625,
            "cosine_post-training": 0.6617, "cosine_retrained": 0.8321,
        })  # fmt: skip
    return DemoResult(
        blob="chipq-demo/vgg16.blob", blob_bytes=3914104, ratio=14.0, onnx_identical=True, exact=True,
        nip_cosine_verify=0.83, images="chipq-demo/retrieval", groundtruth="chipq-demo/retrieval/groundtruth.json",
        queries=72, database=36, rows=rows, seconds={"fetch": 2.0, "compress": 250.0}, cpu_seconds={"fetch": 1.5, "compress": 480.0},
    )  # fmt: skip


def test_the_table_compares_the_three_models_down_each_column(capsys):
    _render(_result())
    out = capsys.readouterr().out
    lines = {label: next(line for line in out.splitlines() if label in line) for _, label in MODEL_ROWS}
    assert all(name in out for name in KIND_COLUMNS.values())
    assert "72 edited queries among 36 images" in out
    float_line, post_line, re_line = lines.values()
    assert re.findall(r"0\.\d{4}", float_line) == ["0.8123", "0.8023", "0.7123"] and "54/72" in float_line
    assert re.findall(r"0\.\d{4}", post_line) == ["0.6012", "0.5912", "0.5012", "0.6617"] and "36/72" in post_line
    assert re.findall(r"0\.\d{4}", re_line) == ["0.7034", "0.6934", "0.6034", "0.8321"] and "45/72" in re_line


def test_the_legend_says_what_the_columns_mean_and_which_way_is_better(capsys):
    _render(_result())
    text = " ".join(capsys.readouterr().out.split())
    assert "mean average precision" in text and "Higher is better" in text and "cosine to float" in text
    assert "compress 250 (480)" in text and "wall (CPU) seconds" in text
