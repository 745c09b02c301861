"""Shards and manifests of `chipq extract --workers` (no Ray needed here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chipq.retrieval import distributed as dist
from chipq.retrieval.descriptors import DescriptorKind


def test_shard_round_trip_and_hostile_shards():
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = dist.pack_shard(["a", "c"], vectors, [("b", "cannot decode")])
    names, got, skipped = dist.unpack_shard(data, ["a", "b", "c"], "s")
    assert names == ["a", "c"] and np.array_equal(got, vectors) and skipped == [("b", "cannot decode")]
    for bad, message in [
        (dist.pack_shard(["a", "x"], vectors, [("b", "r")]), "not the shard's images"),
        (dist.pack_shard(["c", "a"], vectors, [("b", "r")]), "out of order"),
        (dist.pack_shard(["a", "c"], vectors[:1], [("b", "r")]), "vectors"),
        (dist.pack_shard(["a", "c"], vectors * np.nan, [("b", "r")]), "NaN"),
        (b"PK\x03\x04 not a zip", "unreadable"),
    ]:
        with pytest.raises(dist.ShardMismatch, match=message):
            dist.unpack_shard(bad, ["a", "b", "c"], "s")


def test_manifest_names_what_changed(tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(b"1")
    images = [("a.jpg", img)]
    source = dist.Source("blob", "m.blob", b"model")
    args = dict(kind=DescriptorKind.FLOAT, rnip=None, size=(224, 224), batch=8, shard_size=4, metadata={"m": 1})
    base = dist.make_manifest(images, source, **args)
    assert dist._differences(base, dist.make_manifest(images, source, **args)) == []
    other = dist.make_manifest(images, dist.Source("blob", "m.blob", b"other"), **args)
    assert dist._differences(base, other) == ["blob sha256"]
    assert dist._differences(base, dist.make_manifest(images, source, **{**args, "rnip": 5})) == ["--rnip"]
    img.write_bytes(b"22")  # same name, other content
    assert "image files (content)" in dist._differences(base, dist.make_manifest(images, source, **args))
    # A different run's folder is refused before Ray is needed.
    folder = dist.shard_dir(tmp_path / "out.npz")
    folder.mkdir()
    (folder / dist.MANIFEST).write_text(json.dumps(base))
    pytest.importorskip("ray")
    with pytest.raises(dist.ShardMismatch, match="image files"):
        dist.plan_shards(images, tmp_path / "out.npz", source, **args)
    (folder / dist.MANIFEST).write_text("[1, 2")
    with pytest.raises(dist.ShardMismatch, match="unreadable manifest"):
        dist.plan_shards(images, tmp_path / "out.npz", source, **args)
