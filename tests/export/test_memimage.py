"""Memory images: read back from the files, they rebuild every conv payload of the blob bit for bit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipq.export.memimage import (
    ENTRY_FIELDS,
    HEADER_NAME,
    MAP_NAME,
    MemoryImageError,
    c_identifier,
    read_coe,
    read_hex,
    rebuild_payload,
    write_memory_images,
)
from chipq.formats.reader import check_header, check_table, from_bytes
from chipq.formats.synthetic import random_model
from chipq.formats.writer import to_bytes


def _header_arrays(text: str) -> dict[str, list[int]]:
    """Every ``static const uintN_t name[n] = { ... };`` of a generated header, as ints."""
    arrays = {}
    for match in re.finditer(r"static const uint\d+_t (\w+)\[(\d+)\] = \{(.*?)\};", text, re.S):
        values = [int(v.rstrip("ul"), 16) for v in re.findall(r"0x[0-9a-f]+u(?:ll)?", match.group(3))]
        assert len(values) == int(match.group(2))
        arrays[match.group(1)] = values
    return arrays


def rebuilt_payloads(folder: Path, fmt: str) -> dict[str, bytes]:
    """Layer name -> payload rebuilt from the `fmt` files that memory_map.json names."""
    mapping = json.loads((folder / MAP_NAME).read_text())
    arrays = _header_arrays((folder / HEADER_NAME).read_text()) if fmt == "h" else {}
    payloads = {}
    for layer in mapping["layers"]:
        if layer["kind"] != "conv3x3_relu":
            continue
        words = {}
        for bank, info in layer["banks"].items():
            if fmt == "h":
                words[bank] = arrays.get(info["files"]["h"].split(":", 1)[1], [])  # depth 0: no array
            else:
                reader = read_hex if fmt == "hex" else read_coe
                words[bank] = reader(folder / info["files"][fmt], info["width"]).tolist()
            assert len(words[bank]) == info["depth"]
        assert ("presence" in words) == layer["kernel_presence"]
        assert layer["banks"]["alpha"]["depth"] == layer["banks"]["mask"]["depth"] == layer["kept_kernels"]
        payloads[layer["name"]] = rebuild_payload(
            words["alpha"], words["bias"], words["mask"], layer["mask_bits"], layer["alpha_bits"], words.get("presence")
        )
        assert layer["payload_size"] == len(payloads[layer["name"]])
    return payloads


def payload_slices(blob: bytes, folder: Path) -> dict[str, bytes]:
    """Layer name -> payload bytes, located by the reader's layer table (not by the map)."""
    view = memoryview(blob)
    slices = {}
    for record in check_table(view, check_header(view)):
        if record.kind == 1:
            name = record.name.rstrip(b"\0").decode()
            slices[name] = blob[record.payload_offset : record.payload_offset + record.payload_size]
    mapping = json.loads((folder / MAP_NAME).read_text())
    for row in mapping["layers"]:
        if row["kind"] == "conv3x3_relu":
            assert slices[row["name"]] == blob[row["payload_offset"] : row["payload_offset"] + row["payload_size"]]
    return slices


@settings(max_examples=15, deadline=None)
@given(
    bits=st.lists(st.integers(1, 5), min_size=2, max_size=2),
    widths=st.tuples(st.integers(1, 6), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
    alpha_bits=st.lists(st.integers(1, 8), min_size=2, max_size=2),
    keep=st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=2, max_size=2),
)
def test_every_format_rebuilds_the_payloads_bit_for_bit(tmp_path_factory, bits, widths, seed, alpha_bits, keep):
    """For any mask and alpha widths, channel counts and pruning (v1 and v2 layers, a whole layer
    pruned included), the hex, coe and C words give back the payload bytes."""
    model = random_model(bits, [widths[0], "M", widths[1]], input_hw=(8, 8), seed=seed, alpha_bits=alpha_bits, keep=keep)
    blob = to_bytes(model)
    folder = tmp_path_factory.mktemp("img")
    for fmt in ("hex", "coe", "h"):
        write_memory_images(model, blob, folder / fmt, [fmt])
        expected = payload_slices(blob, folder / fmt)
        assert rebuilt_payloads(folder / fmt, fmt) == expected
        assert set(expected) == {"conv1_1", "conv2_1"}


def test_the_map_states_widths_depths_and_registers(tiny_model, tmp_path):
    blob = to_bytes(tiny_model)
    mapping = write_memory_images(tiny_model, blob, tmp_path, ["hex"])
    assert json.loads((tmp_path / MAP_NAME).read_text()) == mapping
    conv1, pool, conv2 = mapping["layers"]
    assert pool == {"index": 1, "name": "pool1", "kind": "maxpool2x2", "channels": 4}
    assert conv1["banks"]["mask"]["width"] == 27 and conv1["banks"]["mask"]["depth"] == 4 * 3
    assert conv2["banks"]["mask"]["width"] == 9 and conv2["banks"]["alpha"]["depth"] == 8 * 4
    assert conv2["banks"]["bias"] == {
        "width": 12,
        "depth": 8,
        "address": "o",
        "word": "bias[o], 12-bit two's complement",
        "files": {"hex": "02_conv2_1.bias.hex"},
    }
    layer = tiny_model.layers[2]
    assert (conv2["weight_shift"], conv2["bias_shift"], conv2["out_shift"]) == (
        layer.weight_shift,
        layer.bias_shift,
        layer.out_shift,
    )
    network = [f"network.{bank}.hex" for bank in ("layers", "presence", "alpha", "bias", "mask")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{stem}.{bank}.hex" for stem in ("00_conv1_1", "02_conv2_1") for bank in ("alpha", "bias", "mask")] + network + [MAP_NAME]
    )


def test_a_mask_word_holds_tap_ky_3_plus_kx_at_bits_t_times_m(tiny_model, tmp_path):
    """The bit order within a word, checked on one kernel against the model's own codes."""
    write_memory_images(tiny_model, to_bytes(tiny_model), tmp_path, ["hex"])
    layer = tiny_model.layers[0]
    words = read_hex(tmp_path / "00_conv1_1.mask.hex", 27)
    o, i = 3, 2
    word = int(words[o * layer.in_channels + i])
    for ky in range(3):
        for kx in range(3):
            assert (word >> ((ky * 3 + kx) * 3)) & 7 == layer.mask[o, i, ky, kx]
    bias = read_hex(tmp_path / "00_conv1_1.bias.hex", 12)
    assert [(int(b) ^ 0x800) - 0x800 for b in bias] == layer.bias.tolist()  # sign from bit 11


def test_the_c_header_compiles_as_c99(tiny_model, tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    write_memory_images(tiny_model, to_bytes(tiny_model), tmp_path, ["h"])
    ident = c_identifier(2, "conv2_1")
    source = tmp_path / "use.c"
    source.write_text(
        f'#include "{HEADER_NAME}"\nint main(void) {{ return (int)({ident}_mask[0] & 1u) + '
        f"{ident.upper()}_MASK_BITS - 1; }}\n"
    )
    subprocess.run(
        [compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o", str(tmp_path / "use"), str(source)],
        check=True,
        cwd=tmp_path,
    )


def test_a_failed_write_leaves_nothing_behind(tiny_model, tmp_path):
    with pytest.raises(MemoryImageError, match="formats"):
        write_memory_images(tiny_model, to_bytes(tiny_model), tmp_path / "out", ["hex", "bin"])
    assert not (tmp_path / "out").exists()


def test_readers_refuse_words_wider_than_the_bank(tmp_path):
    path = tmp_path / "x.hex"
    path.write_text("// c\n1ff\n")
    with pytest.raises(MemoryImageError, match="does not fit 8 bits"):
        read_hex(path, 8)
    path.write_text("zz\n")
    with pytest.raises(MemoryImageError, match="not hexadecimal"):
        read_hex(path, 8)


@pytest.mark.slow
def test_the_real_vgg16_images_rebuild_every_payload(real_vgg16_blob, tmp_path):
    """The real VGG-16 3x7,1x6 blob: hex and coe images of all 13 conv layers rebuild its payloads."""
    model = from_bytes(real_vgg16_blob)
    for fmt in ("hex", "coe"):
        write_memory_images(model, real_vgg16_blob, tmp_path / fmt, [fmt])
        rebuilt = rebuilt_payloads(tmp_path / fmt, fmt)
        assert len(rebuilt) == 13
        assert rebuilt == payload_slices(real_vgg16_blob, tmp_path / fmt)
    assert sum(map(len, rebuilt.values())) > 3_900_000


def test_a_pruned_layer_has_a_presence_bank_and_compacted_alpha_and_mask_banks(tmp_path):
    """Chip format v2 (SPEC 7): presence width 1 depth O*I; alpha width alpha_bits and mask depth P,
    address j = rank among the present kernels (o-major); bias as v1; the map states all of it."""
    model = random_model([3, 1], [4, "M", 6], input_hw=(8, 8), seed=3, alpha_bits=[8, 5], keep=[None, 0.5])
    blob = to_bytes(model)
    mapping = write_memory_images(model, blob, tmp_path, ["hex"])
    assert mapping["format"] == "chipq memory images v2" and mapping["blob"]["format_version"] == 2
    conv1, _, conv2 = mapping["layers"]
    assert (conv1["alpha_bits"], conv1["kernel_presence"], conv1["kept_kernels"]) == (8, False, 12)
    assert set(conv1["banks"]) == {"alpha", "bias", "mask"} and conv1["banks"]["alpha"]["address"] == "o*3 + i"
    layer = model.layers[2]
    kept = layer.kept_kernels()
    assert 0 < kept < 24
    assert (conv2["alpha_bits"], conv2["kernel_presence"], conv2["kernels"], conv2["kept_kernels"]) == (5, True, 24, kept)
    banks = conv2["banks"]
    assert list(banks) == ["presence", "alpha", "bias", "mask"]
    assert (banks["presence"]["width"], banks["presence"]["depth"], banks["presence"]["address"]) == (1, 24, "o*4 + i")
    assert (banks["alpha"]["width"], banks["alpha"]["depth"], banks["mask"]["width"], banks["mask"]["depth"]) == (5, kept, 9, kept)
    assert (banks["bias"]["width"], banks["bias"]["depth"]) == (12, 6)
    presence = read_hex(tmp_path / "02_conv2_1.presence.hex", 1)
    alpha = read_hex(tmp_path / "02_conv2_1.alpha.hex", 5)
    mask = read_hex(tmp_path / "02_conv2_1.mask.hex", 9)
    assert presence.tolist() == layer.present.reshape(-1).astype(int).tolist()
    for j, kernel in enumerate(np.flatnonzero(layer.present.reshape(-1))):  # word j = j-th present kernel
        o, i = divmod(int(kernel), 4)
        assert int(alpha[j]) << 3 == layer.alpha[o, i]
        assert [(int(mask[j]) >> t) & 1 for t in range(9)] == layer.mask[o, i].reshape(-1).tolist()
    assert rebuilt_payloads(tmp_path, "hex") == payload_slices(blob, tmp_path)


def test_a_v1_blob_keeps_the_v1_map_format(tiny_model, tmp_path):
    mapping = write_memory_images(tiny_model, to_bytes(tiny_model), tmp_path, ["coe"])
    assert mapping["format"] == "chipq memory images v1"
    assert all("presence" not in row.get("banks", {}) for row in mapping["layers"])


def test_the_c_header_of_a_pruned_model_compiles_and_states_its_registers(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    model = random_model([2, 1], [5, "M", 3], input_hw=(4, 4), seed=8, alpha_bits=3, keep=[0.4, 0.0])
    write_memory_images(model, to_bytes(model), tmp_path, ["h"])
    assert "chipq_l02_conv2_1_alpha[" not in (tmp_path / HEADER_NAME).read_text()  # every kernel pruned
    ident = c_identifier(0, "conv1_1")
    text = (tmp_path / HEADER_NAME).read_text()
    assert f"#define {ident.upper()}_ALPHA_BITS 3" in text and f"#define {ident.upper()}_KERNEL_PRESENCE 1" in text
    assert f"#define {ident.upper()}_KEPT_KERNELS {model.layers[0].kept_kernels()}" in text
    source = tmp_path / "use.c"
    source.write_text(f'#include "{HEADER_NAME}"\nint main(void) {{ return (int)({ident}_presence[0] & 1u); }}\n')
    subprocess.run(
        [compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o", str(tmp_path / "use"), str(source)],
        check=True,
        cwd=tmp_path,
    )


def _table_entries(path: Path) -> list[dict[str, int]]:
    """The layer-table words of network.layers.hex split into their fields (SPEC 7, "Network images")."""
    words = [int(line, 16) for line in path.read_text().splitlines() if line and not line.startswith("//")]
    return [{field: (word >> low) & ((1 << width) - 1) for field, (low, width) in ENTRY_FIELDS.items()} for word in words]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), alpha_bits=st.lists(st.integers(1, 8), min_size=3, max_size=3),
       keep=st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=3, max_size=3))  # fmt: skip
def test_the_network_images_are_every_layers_banks_at_the_table_s_base_addresses(tmp_path_factory, seed, alpha_bits, keep):
    """network.<bank>.hex holds each conv's own bank at the base its layer-table entry names, and the
    entry holds the conv's registers, its input map size (halved by each pool before it), whether a
    pool follows it (fused) and whether it is the last stage."""
    model = random_model([2, 3, 1], [3, "M", 4, "M", 5], input_hw=(9, 6), seed=seed, alpha_bits=alpha_bits, keep=keep)
    folder = tmp_path_factory.mktemp("net")
    network = write_memory_images(model, to_bytes(model), folder, ["hex"])["network"]
    entries = _table_entries(folder / "network.layers.hex")
    assert [row["conv"] for row in network["stages"]] == ["conv1_1", "conv2_1", "conv3_1"]
    assert [(e["height"], e["width"], e["pool"], e["last"]) for e in entries] == [(9, 6, 1, 0), (4, 3, 1, 0), (2, 1, 0, 1)]
    widths = {"presence": 1, "alpha": 8, "bias": 12, "mask": 45}
    whole = {bank: read_hex(folder / f"network.{bank}.hex", width) for bank, width in widths.items()}
    bases = {"presence": "presence_base", "alpha": "alpha_mask_base", "bias": "bias_base", "mask": "alpha_mask_base"}
    filled = dict.fromkeys(widths, 0)
    for entry, index in zip(entries, (0, 2, 4)):
        layer = model.layers[index]
        assert (entry["in_channels"], entry["out_channels"], entry["mask_bits"], entry["alpha_bits"]) == (
            layer.in_channels, layer.out_channels, layer.mask_bits, layer.alpha_bits)  # fmt: skip
        assert (entry["bias_shift"], entry["out_shift"], entry["pruned"]) == (layer.bias_shift, layer.out_shift, int(layer.pruned))
        for bank in widths:
            own = folder / f"{index:02d}_{layer.name}.{bank}.hex"
            if not own.exists():  # an unpruned layer has no presence bank and takes no presence words
                assert bank == "presence" and not layer.pruned
                continue
            words = read_hex(own, widths[bank]).tolist()
            base = entry[bases[bank]]
            assert base == filled[bank] and whole[bank][base : base + len(words)].tolist() == words
            filled[bank] += len(words)
    assert {bank: len(words) for bank, words in whole.items()} == filled  # nothing else in the ROMs


def test_a_pool_that_follows_no_conv_gets_no_network_images(tmp_path):
    """The sequencer fuses a pool into the conv before it; two pools in a row cannot be sequenced, so
    the map says why and no network image is written (the per-layer images are)."""
    model = random_model([2, 1], [3, "M", "M", 4], input_hw=(8, 8), seed=1)
    network = write_memory_images(model, to_bytes(model), tmp_path, ["hex"])["network"]
    assert network == {"sequenced": False, "reason": "layer 2 (pool2) is a max-pool that does not follow a conv"}
    assert not list(tmp_path.glob("network.*")) and (tmp_path / "03_conv3_1.mask.hex").is_file()


def test_only_the_hex_format_writes_network_images(tiny_model, tmp_path):
    mapping = write_memory_images(tiny_model, to_bytes(tiny_model), tmp_path, ["coe", "h"])
    assert "network" not in mapping and not list(tmp_path.glob("network.*"))
