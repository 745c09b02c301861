"""Images to NIP / RNIP descriptors through an abstract feature function (chipq.retrieval.describe)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from chipq.images import resize
from chipq.retrieval.describe import describe, describe_all, rotated_inputs, run_metadata
from chipq.retrieval.descriptors import DescriptorStore, load_descriptors
from chipq.retrieval.pooling import nip_from_maps, pool_crops
from chipq.retrieval.rois import rnip_crops

CHANNELS = 6


class FakeNet:
    """A tiny deterministic "network": 4x4 average pooling, then a fixed random 1x1 conv + ReLU.

    Records every batch it is given.
    """

    def __init__(self, seed: int = 0) -> None:
        self.weights = np.random.default_rng(seed).standard_normal((CHANNELS, 3)).astype(np.float32)
        self.batches: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        n, c, h, w = batch.shape
        x = batch.astype(np.float32).reshape(n, c, h // 4, 4, w // 4, 4).mean(axis=(3, 5)) / 255
        return np.maximum(np.einsum("oc,nchw->nohw", self.weights, x), 0).astype(np.float32)


def _photo(height: int = 48, width: int = 64, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_nip_inputs_and_result():
    img, net = _photo(), FakeNet()
    got = describe(img, net, size=(32, 32))
    assert len(net.batches) == 1
    batch = net.batches[0]
    assert batch.dtype == np.uint8 and batch.shape == (4, 3, 32, 32)  # NCHW
    upright = resize(img, (32, 32))
    for turns in range(4):
        np.testing.assert_array_equal(batch[turns].transpose(1, 2, 0), np.rot90(upright, turns))
    np.testing.assert_array_equal(got, nip_from_maps(FakeNet()(batch)))
    assert got.dtype == np.float32 and got.shape == (CHANNELS,)


def test_batch_planes_are_rgb():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    net = FakeNet()
    describe(red, net, size=(8, 8))
    assert np.all(net.batches[0][:, 0] == 255) and not net.batches[0][:, 1:].any()


def test_rnip_inputs_batching_and_result():
    img = _photo(48, 64)  # 4:3, --rnip 9: the whole image + 2 + 6 regions = 9 crops, 36 inputs
    crops = rnip_crops(64, 48, 9)
    assert len(crops) == 9
    net = FakeNet()
    got = describe(img, net, size=(16, 16), rnip=9, batch_size=5)
    assert [len(b) for b in net.batches] == [5] * 7 + [1]
    inputs = np.concatenate(net.batches)
    for k, box in enumerate(crops):
        crop = img[box.y : box.y + box.h, box.x : box.x + box.w]
        for turns in range(4):
            expected = np.rot90(resize(crop, (16, 16)), turns)
            np.testing.assert_array_equal(inputs[4 * k + turns].transpose(1, 2, 0), expected)
    maps = FakeNet()(inputs).reshape(9, 4, CHANNELS, 4, 4)
    np.testing.assert_allclose(got, pool_crops(maps), rtol=1e-6)
    np.testing.assert_array_equal(got, describe(img, FakeNet(), size=(16, 16), rnip=9, batch_size=64))


def test_non_square_buffer_keeps_its_shape_under_rotation():
    img = _photo(30, 50)
    inputs = rotated_inputs(img, (16, 24))
    assert [x.shape for x in inputs] == [(16, 24, 3)] * 4
    np.testing.assert_array_equal(inputs[1], np.rot90(resize(img, (24, 16))))
    net = FakeNet()
    describe(img, net, size=(16, 24))
    assert net.batches[0].shape == (4, 3, 16, 24)


def test_bad_feature_function_output():
    with pytest.raises(ValueError, match=r"returned shape \(3, 6, 2, 2\) for a batch of 4"):
        describe(_photo(), lambda batch: np.zeros((3, 6, 2, 2), np.float32), size=(8, 8))


def test_describe_all_skips_undecodable_and_resumes(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = ["a.png", "b.jpg", "c.png", "d.png"]
    for i, name in enumerate(names):
        if name == "b.jpg":
            (folder / name).write_bytes(b"garbage")
        else:
            Image.fromarray(_photo(seed=i)).save(folder / name)
    items = [(name, folder / name) for name in names]
    meta = run_metadata(model="fake", rnip=None, size=(16, 16))

    done = []
    store = DescriptorStore(tmp_path / "out.npz", names, kind="float", metadata=meta)
    summary = describe_all(items, FakeNet(), store, size=(16, 16), on_image=done.append)
    store.finish()
    assert summary.described == 3 and [s[0] for s in summary.skipped] == ["b.jpg"] and done == names
    assert "cannot decode" in summary.skipped[0][1]
    reference = (tmp_path / "out.npz").read_bytes()
    assert load_descriptors(tmp_path / "out.npz").names == ["a.png", "c.png", "d.png"]

    class Crash(Exception):
        pass

    def crashing(batch, net=FakeNet(), calls=[0]):  # noqa: B006 - the call count is the point
        calls[0] += 1
        if calls[0] > 2:
            raise Crash
        return net(batch)

    out = tmp_path / "resumed.npz"
    first = DescriptorStore(out, names, kind="float", metadata=meta, checkpoint_every=1)
    with pytest.raises(Crash):  # a.png and c.png are done and checkpointed, d.png crashes
        describe_all(items, crashing, first, size=(16, 16))
    second = DescriptorStore(out, names, kind="float", metadata=meta, checkpoint_every=1)
    summary = describe_all(items, FakeNet(), second, size=(16, 16))
    second.finish()
    assert summary.resumed == 2 and summary.described == 1 and len(summary.skipped) == 1
    assert out.read_bytes() == reference
