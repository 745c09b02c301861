"""The HTML report: self-contained, escaped, and rendered by a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLES
from PIL import Image

from chipq.reports.html import Hit, Panel, QueryRow, render_report, resolve_image, write_report

PHOTOS = SAMPLES / "photos"


def _page(tmp_path) -> Path:
    photos = sorted(PHOTOS.glob("*.jpg"))
    rows = []
    for q in photos[:3]:
        panels = [
            Panel(label, [Hit(p.name, 1.0 - 0.1 * r, p == q, p) for r, p in enumerate(photos[:4])], "AP 0.5000")
            for label in ("float model", "chip <b>bit</b>")
        ]
        rows.append(QueryRow(q.name, q, panels))
    rows.append(QueryRow("missing.jpg", tmp_path / "nope.jpg", [Panel("float", [])]))
    page = tmp_path / "report.html"
    write_report(page, render_report("chipq <test>", rows, subtitle="two sets"))
    return page


def test_page_is_self_contained_and_escaped(tmp_path):
    text = _page(tmp_path).read_text(encoding="utf-8")
    assert "chip &lt;b&gt;bit&lt;/b&gt;" in text and "<b>bit</b>" not in text
    assert text.count('src="data:image/jpeg;base64,') == 3 + 3 * 2 * 4
    assert "no image" in text and "default-src 'none'" in text
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")
    assert resolve_image(PHOTOS, "../make_queries.py") is None  # a real file, but outside the folder
    assert resolve_image(PHOTOS, "coffee.jpg") == PHOTOS / "coffee.jpg"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = _page(tmp_path)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    args = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,900", page.as_uri(),
    ]
    subprocess.run(args, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert img.shape[:2] == (900, 1200)
    assert img.std() > 20  # not blank
    # The relevant hits' green frame (#1a9c3a) is on screen, and so are the photos' colours.
    green = (np.abs(img - np.array([0x1A, 0x9C, 0x3A])).sum(axis=2) < 30).sum()
    assert green > 500
    assert len(np.unique(img.reshape(-1, 3) // 16, axis=0)) > 200
