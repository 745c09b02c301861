"""A tiny VGG-16 and generated photo sets for the benchmark scripts (bench/ is put on sys.path).

The scripts are checked to run end to end and to write sensible results; nothing here times anything.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import save_tiny_vgg
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

CHIP_HW = (32, 32)  # the tiny model's "chip input": five pools leave a 1x1 map
LARGE_HW = (48, 64)  # 4:3, like the real 640x480


@dataclass(frozen=True)
class TinyBench:
    """Paths of the tiny benchmark inputs."""

    model: Path
    photos: Path
    ukbench: Path  # jpg/ + groundtruth.json with groups, like /work/shared/data/ukbench56
    samples: Path  # photos/ + queries/ + groundtruth.json, like samples/
    chip_hw: tuple[int, int] = CHIP_HW
    large_hw: tuple[int, int] = LARGE_HW


def _photo(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth random colour picture of (width, height)."""
    return Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory) -> TinyBench:
    root = tmp_path_factory.mktemp("bench")
    model = save_tiny_vgg(root / "tiny_vgg16.pt")  # 13 convs, like VGG-16, channels / 16
    rng = np.random.default_rng(0)
    photos = root / "photos"
    photos.mkdir()
    for index in range(3):
        _photo(rng, (64, 48)).save(photos / f"p{index}.jpg", quality=95)
    ukbench = root / "ukbench"
    (ukbench / "jpg").mkdir(parents=True)
    groups = {}
    for group in range(3):
        base = _photo(rng, (64, 48))
        groups[str(group)] = []
        for view in range(2):
            name = f"u{2 * group + view:03d}.jpg"
            base.rotate(5 * view).save(ukbench / "jpg" / name, quality=90)
            groups[str(group)].append(name)
    relevant = {n: [m for m in members if m != n] for members in groups.values() for n in members}
    (ukbench / "groundtruth.json").write_text(json.dumps({"groups": groups, "relevant": relevant}))
    samples = root / "samples"
    (samples / "photos").mkdir(parents=True)
    (samples / "queries").mkdir()
    gt = {}
    for index in range(3):
        photo = _photo(rng, (60, 40))
        photo.save(samples / "photos" / f"s{index}.jpg")
        photo.crop((4, 4, 52, 36)).save(samples / "queries" / f"s{index}_crop.jpg")
        gt[f"queries/s{index}_crop.jpg"] = [f"photos/s{index}.jpg"]
    (samples / "groundtruth.json").write_text(json.dumps(gt))
    return TinyBench(model, photos, ukbench, samples)


@pytest.fixture(scope="session")
def bench_work(tmp_path_factory) -> Path:
    """One work folder for the session, so the tiny blob and ONNX files are made once."""
    return tmp_path_factory.mktemp("bench_work")
