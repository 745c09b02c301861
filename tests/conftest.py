"""Fixtures shared by the whole test suite: small valid models and the committed sample blob."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SAMPLE_BLOB, made_once, run_folder

from chipq.formats.model import ChipModel
from chipq.formats.synthetic import random_model


@pytest.fixture
def tiny_model() -> ChipModel:
    """conv1_1 3->4 (3-bit), pool1, conv2_1 4->8 (1-bit) on a 16x16 input; built in about 1 ms."""
    return random_model([3, 1], [4, "M", 8], input_hw=(16, 16), seed=1)


@pytest.fixture(scope="session")
def sample_blob_path() -> Path:
    """samples/tiny.blob (regenerate with samples/make_sample_blob.py)."""
    return SAMPLE_BLOB


@pytest.fixture(scope="session")
def sample_blob_bytes() -> bytes:
    """The bytes of samples/tiny.blob."""
    return SAMPLE_BLOB.read_bytes()


@pytest.fixture(scope="session")
def real_vgg16(tmp_path_factory) -> tuple[Path, Path]:
    """The real ImageNet VGG-16 as (vgg16.pt, vgg16.onnx), fetched once per machine (slow tests).

    The download is cached in chipq's cache folder ($CHIPQ_CACHE or ~/.cache/chipq).
    """
    from chipq.importers.fetch import fetch_vgg16

    return fetch_vgg16(tmp_path_factory.mktemp("vgg16"))


@pytest.fixture(scope="session")
def real_vgg16_blob(real_vgg16, tmp_path_factory) -> bytes:
    """The real VGG-16 compressed post-training (weight-only, no reconstruction: seconds, not minutes)
    with the paper's plan 3x7,1x6, for the slow tests of exactness (C model, RTL, memory images, the
    whole chip path). Made once per test run, whichever xdist worker asks first (`made_once`)."""

    def make() -> bytes:
        from chipq.formats.writer import to_bytes
        from chipq.importers import load_model
        from chipq.quant.calibrate import calibration_batch, default_calib_dir
        from chipq.quant.compress import compress

        stack = load_model(real_vgg16[0])
        return to_bytes(compress(stack, [3] * 7 + [1] * 6, calibration_batch(default_calib_dir()), reconstruction=None).model)

    return made_once(run_folder(tmp_path_factory) / "real_vgg16_3x7_1x6.blob", make)
