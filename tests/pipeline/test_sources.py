"""The network behind a descriptor, loaded once by the pipeline (chipq.pipeline.sources)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from chipq.errors import UsageError
from chipq.formats.errors import FormatError
from chipq.formats.reader import read_blob_bytes
from chipq.pipeline.sources import features_from_source, load_network
from chipq.retrieval.distributed import Source

TINY = Path(__file__).resolve().parents[2] / "samples" / "tiny.blob"


def test_a_blob_is_read_with_its_bytes_and_errors_name_the_path(tmp_path):
    model, data = read_blob_bytes(TINY)
    assert data == TINY.read_bytes() and model.input_height == 32
    bad = tmp_path / "bad.blob"
    bad.write_bytes(data[:100])
    with pytest.raises(FormatError, match=f"^{bad}: "):
        load_network(blob=bad)


def test_a_blob_network_is_labelled_and_identified_by_its_bytes():
    network = load_network(blob=TINY)
    assert network.label == "blob:tiny.blob"
    assert network.identity == {"blob_sha256": hashlib.sha256(TINY.read_bytes()).hexdigest()}
    assert network.default_input == (32, 32)
    with pytest.raises(UsageError, match="exactly one"):
        load_network()
    with pytest.raises(UsageError, match="exactly one"):
        load_network(blob=TINY, model=TINY)


def test_a_ray_worker_loads_the_same_features_from_the_bytes():
    """What `ShardDescriber` runs equals what a single-process run runs, element for element."""
    pixels = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    here = load_network(blob=TINY).features(2)(pixels)
    there = features_from_source(Source("blob", TINY.name, TINY.read_bytes()), 2)(pixels)
    assert here.dtype == np.float32 and np.array_equal(here, there)
