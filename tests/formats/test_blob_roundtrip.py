"""Round trips, determinism, atomic writes and the VGG-16 sizes the design promises."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipq.formats import constants as C
from chipq.formats import errors as E
from chipq.formats.model import ChipModel, ConvLayer, PoolLayer
from chipq.formats.reader import from_bytes, read_blob
from chipq.formats.synthetic import VGG16_CONFIG, VGG16_PLAN_3X7_1X6, random_model
from chipq.formats.writer import accumulator_bound, to_bytes, write_blob


@st.composite
def chip_models(draw) -> ChipModel:
    """Any valid model: 1..6 convs of 1..9 channels, bits 1..5, pools where the map allows, any shifts."""
    height, width = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers, channels, h, w, block = [], C.INPUT_CHANNELS, height, width, 1
    for index in range(draw(st.integers(1, 6))):
        out = draw(st.integers(1, 9))
        bits = draw(st.integers(C.MIN_MASK_BITS, C.MAX_MASK_BITS))
        layers.append(
            ConvLayer(
                name=f"c{index}",
                mask_bits=bits,
                weight_shift=draw(st.integers(0, C.WEIGHT_SHIFT_MAX)),
                # Small channel counts keep sum|W| * 255 under 2^28, so these shifts keep SPEC 4.5.
                bias_shift=draw(st.integers(0, 16)),
                out_shift=draw(st.integers(0, C.OUT_SHIFT_MAX)),
                alpha=rng.integers(0, 256, size=(out, channels), dtype=np.uint8),
                mask=rng.integers(0, 1 << bits, size=(out, channels, 3, 3), dtype=np.uint8),
                bias=rng.integers(C.BIAS_MIN, C.BIAS_MAX + 1, size=out).astype(np.int16),
            )
        )
        channels = out
        if h >= 2 and w >= 2 and draw(st.booleans()):
            layers.append(PoolLayer(name=f"p{block}", channels=channels))
            h, w, block = h // 2, w // 2, block + 1
    return ChipModel(
        input_height=height,
        input_width=width,
        channel_order=draw(st.sampled_from(list(C.ChannelOrder))),
        input_mean=tuple(draw(st.lists(st.integers(0, 255), min_size=3, max_size=3))),
        layers=tuple(layers),
    )


@settings(max_examples=150, deadline=None)
@given(chip_models())
def test_read_inverts_write(model):
    """read(write(m)) == m, and writing what was read gives the same bytes, for any valid model."""
    data = to_bytes(model)
    again = from_bytes(data)
    assert again == model
    assert to_bytes(again) == data


@settings(max_examples=50, deadline=None)
@given(chip_models())
def test_layout_is_header_table_then_aligned_payloads(model):
    """Payloads sit at the first aligned offset after the previous region; the file ends at the last one."""
    data = to_bytes(model)
    end = C.HEADER_SIZE + len(model.layers) * C.LAYER_RECORD_SIZE
    for index, layer in enumerate(model.layers):
        record = data[C.HEADER_SIZE + index * 48 : C.HEADER_SIZE + (index + 1) * 48]
        offset = int.from_bytes(record[32:40], "little")
        size = int.from_bytes(record[40:44], "little")
        if isinstance(layer, PoolLayer):
            assert (offset, size) == (0, 0)
            continue
        assert offset == -(-end // 8) * 8 and data[end:offset] == bytes(offset - end)
        assert size == sum(layer.region_sizes())
        assert int.from_bytes(record[44:48], "little") == zlib.crc32(data[offset : offset + size])
        end = offset + size
    assert end == len(data) == int.from_bytes(data[24:32], "little")


def test_same_model_same_bytes(tiny_model):
    copy = random_model([3, 1], [4, "M", 8], input_hw=(16, 16), seed=1)
    assert to_bytes(tiny_model) == to_bytes(tiny_model) == to_bytes(copy)
    assert to_bytes(random_model([3, 1], [4, "M", 8], input_hw=(16, 16), seed=2)) != to_bytes(tiny_model)


def test_write_blob_writes_exactly_to_bytes(tiny_model, tmp_path):
    path = tmp_path / "m.blob"
    write_blob(tiny_model, path)
    assert path.read_bytes() == to_bytes(tiny_model)
    assert read_blob(path) == tiny_model
    assert os.listdir(tmp_path) == ["m.blob"]  # no temp file left behind


def test_write_blob_refusal_leaves_the_old_file(tiny_model, tmp_path):
    path = tmp_path / "m.blob"
    path.write_bytes(b"previous")
    bad = ChipModel(16, 16, C.ChannelOrder.RGB, (0, 0, 0), tiny_model.layers[1:])  # starts with a pool
    with pytest.raises(E.ChainMismatch):
        write_blob(bad, path)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.blob"]


def test_write_blob_into_missing_folder_is_a_format_error(tiny_model, tmp_path):
    with pytest.raises(E.BlobWriteFailed, match="cannot write"):
        write_blob(tiny_model, tmp_path / "missing" / "m.blob")


def test_sample_blob_is_what_the_script_makes(sample_blob_bytes):
    """samples/tiny.blob is current: regenerate it with samples/make_sample_blob.py if this fails."""
    assert to_bytes(random_model([3, 2], [8, "M", 16], input_hw=(32, 32), seed=2)) == sample_blob_bytes


def test_vgg16_plan_3x7_1x6_sizes():
    """The paper's numbers: 31,255,104 bits of masks + alphas, a ~3.91 MB blob, >= 15x vs fp32."""
    model = random_model(VGG16_PLAN_3X7_1X6, VGG16_CONFIG)
    convs = model.conv_layers()
    assert len(convs) == 13 and len(model.layers) == 17 and isinstance(model.layers[-1], ConvLayer)
    mask_alpha_bits = sum(c.out_channels * c.in_channels * (9 * c.mask_bits + 8) for c in convs)
    assert mask_alpha_bits == 31_255_104
    biases = sum(c.out_channels for c in convs)
    assert biases == 4224
    data = to_bytes(model)
    expected = 3_906_888 + biases * 12 // 8
    assert abs(len(data) - expected) <= 0.005 * expected
    fp32 = sum(c.out_channels * c.in_channels * 9 * 4 for c in convs)
    assert fp32 == 58_841_856
    assert fp32 / len(data) >= 15.0
    assert max(accumulator_bound(model)) <= C.ACC_MAX
    assert from_bytes(data) == model
