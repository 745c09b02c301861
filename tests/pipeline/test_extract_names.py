"""chipq.pipeline.extract: what a run does with names a descriptor file cannot hold."""

from __future__ import annotations

import os
import shutil

from helpers import SAMPLE_BLOB, write_photos

from chipq.pipeline.extract import extract
from chipq.retrieval.descriptors import load_descriptors


def test_images_whose_names_cannot_be_stored_are_skipped_up_front(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, count=2)
    shutil.copy(photos / "img0.jpg", os.fsencode(photos) + b"/bad\xff.jpg")  # not UTF-8
    shutil.copy(photos / "img0.jpg", photos / "new\nline.jpg")
    shutil.copy(photos / "img0.jpg", photos / "esc\x1b[31m.jpg")
    result = extract(photos, tmp_path / "d.npz", blob=SAMPLE_BLOB)
    assert result.summary.described == 2 and len(result.summary.skipped) == 3
    assert all("control characters or is not valid UTF-8" in reason for _, reason in result.summary.skipped)
    assert load_descriptors(tmp_path / "d.npz").names == ["img0.jpg", "img1.jpg"]
