"""extract runs fewer inputs per executor call when a call's maps would be large: the same descriptors
(bit for bit from a blob; from a float model to float32 rounding, as oneDNN may sum in another order
for another batch size)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import save_tiny_vgg, write_photos

from chipq.pipeline.extract import ExtractSettings, extract


@pytest.mark.parametrize("network", ["model", "blob"])
def test_a_smaller_executor_batch_gives_the_same_descriptors(tmp_path, monkeypatch, network):
    photos = tmp_path / "photos"
    write_photos(photos, count=2, size=(60, 80))
    source = {"model": save_tiny_vgg(tmp_path / "tiny.pt")}
    if network == "blob":
        from helpers import SAMPLE_BLOB

        source = {"blob": SAMPLE_BLOB}
    settings = ExtractSettings(rnip=5, input_hw=(64, 64), batch=8)
    calls = []

    def run(budget: int, name: str):
        monkeypatch.setattr("chipq.executor.memory.BATCH_ACTIVATION_BYTES", budget)
        import chipq.pipeline.sources as sources

        original = sources.Network.features
        monkeypatch.setattr(sources.Network, "features", lambda self, batch: calls.append(batch) or original(self, batch))
        extract(photos, tmp_path / name, settings=settings, **source)
        monkeypatch.setattr(sources.Network, "features", original)
        return np.load(tmp_path / name)

    whole, one = run(1 << 40, "whole.npz"), run(1, "one.npz")
    assert calls == [8, 1]
    assert sorted(whole.files) == sorted(one.files)
    for key in whole.files:
        if network == "blob" or whole[key].dtype.kind not in "fc":
            assert np.array_equal(whole[key], one[key]), key
        else:
            np.testing.assert_allclose(whole[key], one[key], rtol=0, atol=1e-6)
