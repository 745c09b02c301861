"""verify's fidelity checks stream the float model a layer at a time: the same numbers as every map kept."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import save_tiny_vgg

from chipq.executor.fast import FastExecutor
from chipq.floatnet.reference import FloatReference
from chipq.formats.model import ConvLayer
from chipq.importers import load_model
from chipq.pipeline.verify import verify
from chipq.quant.compress import compress
from chipq.reports.verify import AgreementSums, agreement


@pytest.fixture(scope="module")
def chip_and_stack(tmp_path_factory):
    stack = load_model(save_tiny_vgg(tmp_path_factory.mktemp("m") / "tiny.pt")).without_trailing_pool()
    images = np.random.default_rng(3).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    chip = compress(stack, [3] * 7 + [1] * 6, images[:4], input_hw=(32, 32), reconstruction=None).model
    return chip, stack, images


def _kept_maps_agreement(chip, stack, images):
    """The agreement as verify made it before: every float map of every image kept, then compared."""
    fast_taps = FastExecutor(chip).run(images, taps=True)
    float_taps = FloatReference(stack).run(images, taps=True)
    fracs = chip.activation_fracs()
    return [
        agreement(layer.name, taps, frac, float_taps[layer.name])
        for layer, taps, frac in zip(chip.layers, fast_taps, fracs)
        if isinstance(layer, ConvLayer)
    ]


def test_one_chunk_of_photos_gives_exactly_the_kept_maps_numbers(chip_and_stack):
    chip, stack, images = chip_and_stack
    report = verify(chip, images[:8], [f"p{i}" for i in range(8)], stack=stack, golden_count=0)
    assert report.agreement == _kept_maps_agreement(chip, stack, images[:8])


def test_more_photos_than_a_chunk_give_the_same_numbers_to_rounding(chip_and_stack):
    chip, stack, images = chip_and_stack
    report = verify(chip, images, [f"p{i}" for i in range(len(images))], stack=stack, golden_count=0)
    kept = _kept_maps_agreement(chip, stack, images)
    assert [a.name for a in report.agreement] == [b.name for b in kept]
    for a, b in zip(report.agreement, kept):
        assert a.rel_error == pytest.approx(b.rel_error, rel=1e-9) and a.cosine == pytest.approx(b.cosine, rel=1e-9)


def test_sums_added_in_pieces_equal_the_whole():
    rng = np.random.default_rng(0)
    q, f = rng.integers(0, 256, (6, 4, 5, 5)).astype(np.uint8), rng.random((6, 4, 5, 5), dtype=np.float32) * 60
    whole = agreement("x", q, 2, f)
    pieces = AgreementSums().add(q[:2], 2, f[:2]).add(q[2:], 2, f[2:]).result("x")
    assert pieces.rel_error == pytest.approx(whole.rel_error, rel=1e-12)
    assert pieces.sqnr_db == pytest.approx(whole.sqnr_db, rel=1e-12) and pieces.cosine == pytest.approx(whole.cosine, rel=1e-12)
