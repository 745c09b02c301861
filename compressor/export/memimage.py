"""Weight memory images for ROM initialisation: `$readmemh` (.hex), Xilinx .coe and a C header.

Every conv layer has three read-only banks, four for a pruned layer, each one word per address (SPEC
7, "Memory images"), with P the number of stored kernels (O*I, or the present ones of a pruned layer)
and j the rank of kernel (o, i) among them in o-major order (j = o*I + i when nothing is pruned):

- ``presence`` (a pruned v2 layer only): 1-bit words, depth O*I, address ``o*I + i`` holds 1 when
  kernel (o, i) is stored, 0 when it is pruned;
- ``alpha``: alpha_bits-wide words (8 in v1), depth P, address j holds the kernel's stored alpha code
  (the chip multiplies by ``code << (8 - alpha_bits)``);
- ``bias``: 12-bit words, depth O, address ``o`` holds the low 12 bits of ``bias[o]`` (two's
  complement);
- ``mask``: 9*m-bit words, depth P, address j holds the nine m-bit codes of the kernel: tap
  ``t = ky*3 + kx`` at bits ``t*m .. t*m + m - 1`` (LSB first).

Laid end to end LSB first, the words of a bank are exactly the bit stream of the blob's region
(SPEC 3.2): the images carry the payload bit for bit, and `rebuild_payload` turns them back into it.
A v1 layer's images are exactly those of chip format v1.
`DIR/memory_map.json` names every file, word width, depth and address formula, and the registers
(shifts, sizes) each layer needs.

The hex format also writes the whole network as one set of ROMs for a layer sequencer
(`rtl/chipq_network.v`, SPEC 7 "Network images"): ``network.{alpha,mask,bias,presence}.hex`` hold
every conv's banks end to end (alpha 8 bits, mask 45 bits wide, words zero-extended), and
``network.layers.hex`` one 192-bit entry per stage (a conv, with the max-pool that follows it fused)
holding its registers, its input map size and its banks' base addresses. The per-layer files stay
exactly as they were.

Nothing here reads a blob file: the caller passes a checked `ChipModel` and the blob bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from chipq.errors import ChipqError
from chipq.formats import constants as C
from chipq.formats.fileio import replace_file
from chipq.formats.model import ChipModel, ConvLayer, layer_stem

MAP_FORMATS = {C.FORMAT_V1: "chipq memory images v1", C.FORMAT_V2: "chipq memory images v2"}
MAP_NAME = "memory_map.json"
HEADER_NAME = "chipq_rom.h"
BANKS = ("presence", "alpha", "bias", "mask")  # payload order (SPEC 3.1); presence only when pruned
FORMATS = ("hex", "coe", "h")


class MemoryImageError(ChipqError):
    """A memory image that cannot be written or read back (exit 2)."""


@dataclass(frozen=True)
class Bank:
    """One ROM of one layer: its words and how to address them."""

    name: str
    width: int
    words: np.ndarray  # uint64, one per address
    address: str  # the address formula, for people
    word: str  # what a word holds, for people

    @property
    def depth(self) -> int:
        return int(self.words.size)

    @property
    def digits(self) -> int:
        return (self.width + 3) // 4


def layer_banks(layer: ConvLayer) -> list[Bank]:
    """The banks of `layer` in payload order: presence (pruned layers only), alpha, bias, mask."""
    in_ch, bits, alpha_bits = layer.in_channels, layer.mask_bits, layer.alpha_bits
    stored = np.ones(layer.alpha.size, dtype=bool) if layer.present is None else layer.present.reshape(-1)
    kernel_address = "j = rank of kernel (o, i) among the present ones, o-major" if layer.pruned else f"o*{in_ch} + i"
    codes = layer.mask.astype(np.uint64).reshape(-1, C.KERNEL_TAPS)[stored]
    mask = np.zeros(codes.shape[0], dtype=np.uint64)
    for tap in range(C.KERNEL_TAPS):
        mask |= codes[:, tap] << np.uint64(tap * bits)
    if alpha_bits == C.ALPHA_BITS:
        alpha_word = "alpha[o][i], unsigned"
    else:
        alpha_word = f"alpha code of kernel (o, i), unsigned; the chip multiplies by code << {C.ALPHA_BITS - alpha_bits}"
    banks = []
    if layer.pruned:
        banks.append(Bank("presence", 1, stored.astype(np.uint64), f"o*{in_ch} + i", "1: kernel (o, i) stored; 0: pruned"))
    return banks + [
        Bank("alpha", alpha_bits, layer.alpha_codes().astype(np.uint64).reshape(-1)[stored], kernel_address, alpha_word),
        Bank("bias", C.BIAS_BITS, (layer.bias.astype(np.int64) & ((1 << C.BIAS_BITS) - 1)).astype(np.uint64), "o", "bias[o], 12-bit two's complement"),
        Bank(
            "mask",
            C.KERNEL_TAPS * bits,
            mask,
            kernel_address,
            f"code of tap t = ky*3 + kx at bits t*{bits} .. t*{bits}+{bits - 1}, LSB first",
        ),
    ]


def rebuild_payload(
    alpha: Iterable[int],
    bias: Iterable[int],
    mask: Iterable[int],
    mask_bits: int,
    alpha_bits: int = C.ALPHA_BITS,
    presence: Iterable[int] | None = None,
) -> bytes:
    """The conv payload (SPEC 3.1) from the banks' words: their streams, LSB first, concatenated.

    Args:
        alpha, bias, mask: the words of those banks, address order.
        mask_bits, alpha_bits: the layer's widths (the mask word is 9 * mask_bits wide).
        presence: the presence bank's words of a pruned layer; None for a layer without a bitmap.

    >>> rebuild_payload([7], [0xFFE], [0b101_010_111_000_001_011_100_110_111], 3).hex(" ")
    '07 fe 0f 37 17 5c 05'
    >>> rebuild_payload([5], [1], [0b110_011_001], 1, alpha_bits=3, presence=[0, 1]).hex(" ")
    '02 05 01 00 99 01'
    """
    regions = [] if presence is None else [_stream(_words(presence), 1)]
    return b"".join(
        regions
        + [
            _stream(_words(alpha), alpha_bits),
            _stream(_words(bias), C.BIAS_BITS),
            _stream(_words(mask), C.KERNEL_TAPS * mask_bits),
        ]
    )


def _words(values: Iterable[int]) -> np.ndarray:
    return np.asarray(list(values), dtype=np.uint64)


def _stream(words: np.ndarray, width: int) -> bytes:
    """Words of `width` bits (<= 64) laid end to end LSB first, zero-padded to a whole byte."""
    if words.size and int(words.max()) >> width:
        raise MemoryImageError(f"a word does not fit {width} bits")
    as_bytes = words.astype("<u8").view(np.uint8).reshape(-1, 8)
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :width]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


# -- file formats -------------------------------------------------------------------------------


def _words_text(bank: Bank, separator: str) -> str:
    fmt = f"{{:0{bank.digits}x}}".format
    return separator.join(map(fmt, bank.words.tolist()))


def hex_text(stem: str, bank: Bank) -> str:
    """A `$readmemh` file: a comment line, then one word per line, hex, no address markers."""
    comment = f"// chipq {stem}.{bank.name}: {bank.depth} words of {bank.width} bits, address {bank.address}"
    return comment + "\n" + _words_text(bank, "\n") + "\n"


def coe_text(stem: str, bank: Bank) -> str:
    """A Xilinx .coe file (radix 16, one word per line)."""
    comment = f"; chipq {stem}.{bank.name}: {bank.depth} words of {bank.width} bits, address {bank.address}"
    body = _words_text(bank, ",\n")
    if not body:  # a bank of depth 0 (every kernel of the layer pruned): no line may start with ';'
        return f"{comment}\nmemory_initialization_radix=16;\nmemory_initialization_vector=;\n"
    return f"{comment}\nmemory_initialization_radix=16;\nmemory_initialization_vector=\n{body};\n"


def read_hex(path: Path, width: int) -> np.ndarray:
    """The words of a `$readmemh` file written by `hex_text` (comments and blank lines skipped)."""
    lines = [line.split("//", 1)[0].strip() for line in _read_text(path).splitlines()]
    return _parse_words(path, [line for line in lines if line], width)


def read_coe(path: Path, width: int) -> np.ndarray:
    """The words of a .coe file written by `coe_text`."""
    lines = [line.split(";", 1)[0] if line.lstrip().startswith(";") else line for line in _read_text(path).splitlines()]
    text = "\n".join(lines)
    match = re.search(r"memory_initialization_radix\s*=\s*16\s*;\s*memory_initialization_vector\s*=(.*?);", text, re.S)
    if not match:
        raise MemoryImageError(f"{path}: not a radix-16 .coe file")
    items = [item.strip() for item in match.group(1).replace("\n", ",").split(",")]
    return _parse_words(path, [item for item in items if item], width)


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise MemoryImageError(f"{path}: cannot read ({exc})") from None


def _parse_words(path: Path, items: list[str], width: int) -> np.ndarray:
    try:
        values = [int(item, 16) for item in items]
    except ValueError:
        raise MemoryImageError(f"{path}: a word is not hexadecimal") from None
    words = np.asarray(values, dtype=np.uint64)
    if words.size and int(words.max()) >> width:
        raise MemoryImageError(f"{path}: a word does not fit {width} bits")
    return words


def c_identifier(index: int, name: str) -> str:
    """``chipq_l03_conv2_1``: a C name for layer `index` (layer names may hold '.' and '-')."""
    return "chipq_l" + re.sub(r"[^A-Za-z0-9_]", "_", layer_stem(index, name))


def header_text(model: ChipModel, blob_sha256: str) -> str:
    """A C99 header with one ``static const`` array per layer and bank, and the layer registers."""
    lines = [
        f"/* chipq weight ROM images (chip format v{model.format_version()}), generated by `chipq export --format h`.",
        f" * blob sha256 {blob_sha256}",
        " * Per conv layer: <id>_alpha[j] (ALPHA_BITS-bit codes, the chip multiplies by code << (8 - ALPHA_BITS)),",
        " * <id>_bias[o] (12-bit two's complement in the low bits), <id>_mask[j] (tap t = ky*3 + kx at bits",
        " * t*m .. t*m + m - 1), j = o*I + i; a pruned layer (KERNEL_PRESENCE 1) also has <id>_presence[o*I + i]",
        " * and stores only its KEPT_KERNELS present kernels: j = rank among them, o-major. SPEC.md section 7. */",
        "#ifndef CHIPQ_ROM_H",
        "#define CHIPQ_ROM_H",
        "#include <stdint.h>",
        "",
    ]
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, ConvLayer):
            continue
        ident = c_identifier(index, layer.name)
        upper = ident.upper()
        for key, value in (
            ("IN_CHANNELS", layer.in_channels),
            ("OUT_CHANNELS", layer.out_channels),
            ("MASK_BITS", layer.mask_bits),
            ("WEIGHT_SHIFT", layer.weight_shift),
            ("BIAS_SHIFT", layer.bias_shift),
            ("OUT_SHIFT", layer.out_shift),
            ("ALPHA_BITS", layer.alpha_bits),
            ("KERNEL_PRESENCE", int(layer.pruned)),
            ("KEPT_KERNELS", layer.kept_kernels()),
        ):
            lines.append(f"#define {upper}_{key} {value}")
        for bank in layer_banks(layer):
            if not bank.depth:  # every kernel pruned: C has no zero-length arrays
                lines.append(f"/* {bank.name}: no words (every kernel of the layer is pruned); no array */")
                continue
            ctype = _c_type(bank.width)
            suffix = "u" if bank.width <= 32 else "ull"
            fmt = f"0x{{:0{bank.digits}x}}{suffix}".format
            body = ",\n".join(
                "    " + ", ".join(map(fmt, chunk))
                for chunk in _chunks(bank.words.tolist(), 8)
            )
            lines.append(f"/* {bank.name}: {bank.width}-bit words, address {bank.address} */")
            lines.append(f"static const {ctype} {ident}_{bank.name}[{bank.depth}] = {{\n{body}\n}};")
        lines.append("")
    lines.append("#endif /* CHIPQ_ROM_H */")
    return "\n".join(lines) + "\n"


def _c_type(width: int) -> str:
    for bits in (8, 16, 32, 64):
        if width <= bits:
            return f"uint{bits}_t"
    raise MemoryImageError(f"no C type holds {width} bits")  # pragma: no cover - 9*5 = 45 at most


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the whole network for a layer sequencer ----------------------------------------------------

NETWORK_STEM = "network"
NETWORK_BANK_WIDTHS = {"presence": 1, "alpha": C.ALPHA_BITS, "bias": C.BIAS_BITS, "mask": C.KERNEL_TAPS * C.MAX_MASK_BITS}
ENTRY_BITS = 192
# a layer-table entry: field -> (lowest bit, width); SPEC 7 "Network images" and rtl/chipq_network.v
ENTRY_FIELDS = {
    "in_channels": (0, 16),
    "out_channels": (16, 16),
    "height": (32, 16),
    "width": (48, 16),
    "mask_bits": (64, 4),
    "alpha_bits": (68, 4),
    "bias_shift": (72, 8),
    "out_shift": (80, 8),
    "pruned": (88, 1),
    "pool": (89, 1),
    "last": (90, 1),
    "alpha_mask_base": (96, 32),
    "bias_base": (128, 32),
    "presence_base": (160, 32),
}


def network_stages(model: ChipModel) -> list[dict[str, Any]] | str:
    """The sequencer's stages: each conv with its input map and the max-pool that follows it, if any.

    Returns:
        One dict per conv (``conv``/``pool`` layer indices, ``height``/``width`` of its input map at
        the model's input size), or the reason the network cannot be sequenced (a pool that does not
        follow a conv: the sequencer fuses every pool into the conv before it).
    """
    height, width = model.input_height, model.input_width
    stages: list[dict[str, Any]] = []
    for index, layer in enumerate(model.layers):
        if isinstance(layer, ConvLayer):
            stages.append({"conv": index, "pool": None, "height": height, "width": width})
        elif not stages or stages[-1]["pool"] is not None:
            return f"layer {index} ({layer.name}) is a max-pool that does not follow a conv"
        else:
            stages[-1]["pool"] = index
            height, width = height // 2, width // 2
    return stages


def network_banks(model: ChipModel, stages: list[dict[str, Any]]) -> tuple[dict[str, Bank], list[dict[str, int]]]:
    """The whole-network banks (every conv's words end to end, in layer order) and each stage's bases."""
    words: dict[str, list[np.ndarray]] = {name: [] for name in BANKS}
    bases = []
    filled = dict.fromkeys(BANKS, 0)
    for stage in stages:
        layer = model.layers[stage["conv"]]
        assert isinstance(layer, ConvLayer)
        banks = {bank.name: bank for bank in layer_banks(layer)}
        bases.append({"alpha_mask_base": filled["alpha"], "bias_base": filled["bias"], "presence_base": filled["presence"]})
        for name, bank in banks.items():
            words[name].append(bank.words)
            filled[name] += bank.depth
    addresses = {
        "presence": "presence_base + o*I + i of a pruned layer",
        "alpha": "alpha_mask_base + the layer's own alpha address",
        "bias": "bias_base + o",
        "mask": "alpha_mask_base + the layer's own mask address",
    }
    contents = {
        "presence": "every pruned layer's presence bank, layer order",
        "alpha": "every layer's alpha codes, zero-extended (the entry's alpha_bits gives the shift)",
        "bias": "every layer's bias bank, layer order",
        "mask": "every layer's mask words, zero-extended (the entry's mask_bits gives the code width)",
    }
    out = {
        name: Bank(name, NETWORK_BANK_WIDTHS[name], np.concatenate(words[name] or [np.zeros(0, np.uint64)]).astype(np.uint64),
                   addresses[name], contents[name])  # fmt: skip
        for name in BANKS
    }
    return out, bases


def layer_table(model: ChipModel, stages: list[dict[str, Any]], bases: list[dict[str, int]]) -> list[dict[str, int]]:
    """One entry per stage: the field values of `ENTRY_FIELDS`."""
    entries = []
    for number, (stage, base) in enumerate(zip(stages, bases)):
        layer = model.layers[stage["conv"]]
        assert isinstance(layer, ConvLayer)
        entry = {
            "in_channels": layer.in_channels, "out_channels": layer.out_channels,
            "height": stage["height"], "width": stage["width"], "mask_bits": layer.mask_bits,
            "alpha_bits": layer.alpha_bits, "bias_shift": layer.bias_shift, "out_shift": layer.out_shift,
            "pruned": int(layer.pruned), "pool": int(stage["pool"] is not None), "last": int(number == len(stages) - 1),
            **base,
        }  # fmt: skip
        for field, value in entry.items():
            if value >> ENTRY_FIELDS[field][1]:
                raise MemoryImageError(f"layer {layer.name}: {field} {value} does not fit the layer table's {ENTRY_FIELDS[field][1]} bits")
        entries.append(entry)
    return entries


def entry_word(entry: dict[str, int]) -> int:
    """The 192-bit layer-table word of `entry`.

    >>> hex(entry_word({"in_channels": 3, "out_channels": 64, "pool": 1, "bias_base": 64}))
    '0x4000000000020000000000000000400003'
    """
    word = 0
    for field, value in entry.items():
        low, _ = ENTRY_FIELDS[field]
        word |= int(value) << low
    return word


def network_texts(model: ChipModel) -> tuple[dict[str, str], dict[str, Any]]:
    """The network images (file name -> text) and their part of the memory map; no images, and the
    reason, when the network cannot be sequenced."""
    stages = network_stages(model)
    if isinstance(stages, str):
        return {}, {"sequenced": False, "reason": stages}
    banks, bases = network_banks(model, stages)
    entries = layer_table(model, stages, bases)
    fields = ", ".join(f"{field} [{low + width - 1}:{low}]" for field, (low, width) in ENTRY_FIELDS.items())
    table_text = f"// chipq {NETWORK_STEM}.layers: {len(entries)} words of {ENTRY_BITS} bits, address stage; {fields}\n"
    table_text += "".join(f"{entry_word(entry):0{ENTRY_BITS // 4}x}\n" for entry in entries)
    texts = {f"{NETWORK_STEM}.layers.hex": table_text}
    files = {"layers": {"width": ENTRY_BITS, "depth": len(entries), "fields": {k: list(v) for k, v in ENTRY_FIELDS.items()},
                        "file": f"{NETWORK_STEM}.layers.hex"}}  # fmt: skip
    for name, bank in banks.items():
        texts[f"{NETWORK_STEM}.{name}.hex"] = hex_text(NETWORK_STEM, bank)
        files[name] = {"width": bank.width, "depth": bank.depth, "address": bank.address, "word": bank.word,
                       "file": f"{NETWORK_STEM}.{name}.hex"}  # fmt: skip
    rows = []
    for stage, entry in zip(stages, entries):
        conv = model.layers[stage["conv"]]
        pooled_by = None if stage["pool"] is None else model.layers[stage["pool"]].name
        rows.append({"layer": stage["conv"], "conv": conv.name, "pooled_by": pooled_by, **entry})
    return texts, {"sequenced": True, "banks": files, "stages": rows}


# -- the map and the writer ---------------------------------------------------------------------


def memory_map(model: ChipModel, blob: bytes, formats: Iterable[str]) -> dict[str, Any]:
    """`memory_map.json`: every layer's registers and banks, and the files of `formats`."""
    formats = list(formats)
    layers = []
    region_end = C.HEADER_SIZE + len(model.layers) * C.LAYER_RECORD_SIZE
    for index, layer in enumerate(model.layers):
        stem = layer_stem(index, layer.name)
        if not isinstance(layer, ConvLayer):
            layers.append({"index": index, "name": layer.name, "kind": "maxpool2x2", "channels": layer.channels})
            continue
        offset = -(-region_end // C.ALIGNMENT) * C.ALIGNMENT
        size = sum(layer.region_sizes())
        region_end = offset + size
        banks = {}
        for bank in layer_banks(layer):
            files = {fmt: f"{stem}.{bank.name}.{fmt}" for fmt in formats if fmt in ("hex", "coe")}
            if "h" in formats:
                files["h"] = f"{HEADER_NAME}:{c_identifier(index, layer.name)}_{bank.name}"
            banks[bank.name] = {
                "width": bank.width,
                "depth": bank.depth,
                "address": bank.address,
                "word": bank.word,
                "files": files,
            }
        layers.append(
            {
                "index": index,
                "name": layer.name,
                "kind": "conv3x3_relu",
                "in_channels": layer.in_channels,
                "out_channels": layer.out_channels,
                "mask_bits": layer.mask_bits,
                "weight_shift": layer.weight_shift,
                "bias_shift": layer.bias_shift,
                "out_shift": layer.out_shift,
                "alpha_bits": layer.alpha_bits,
                "kernel_presence": layer.pruned,
                "kernels": layer.out_channels * layer.in_channels,
                "kept_kernels": layer.kept_kernels(),
                "payload_offset": offset,
                "payload_size": size,
                "payload_crc32": zlib.crc32(blob[offset : offset + size]),
                "banks": banks,
            }
        )
    return {
        "format": MAP_FORMATS[model.format_version()],
        "blob": {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(), "format_version": model.format_version()},
        "input": {
            "height": model.input_height,
            "width": model.input_width,
            "channel_order": C.ChannelOrder(model.channel_order).name,
            "mean": [int(v) for v in model.input_mean],
        },
        "bit_order": "a word's bit 0 is its least significant bit; the words of a bank laid end to end, "
        "LSB first, are the blob region's bit stream (SPEC 3.2)",
        "formats": formats,
        "layers": layers,
        **({"network": network_texts(model)[1]} if "hex" in formats else {}),
    }


def write_memory_images(model: ChipModel, blob: bytes, out_dir: Path, formats: Iterable[str]) -> dict[str, Any]:
    """Write the images of `formats` (a subset of ``hex``, ``coe``, ``h``) and the map into `out_dir`.

    Files appear only when all are written: they are made in a staging folder inside `out_dir`
    and moved in at the end, `memory_map.json` last.

    Returns:
        The memory map (also written as `out_dir/memory_map.json`).

    Raises:
        MemoryImageError: an unknown format, or the folder cannot be written.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise MemoryImageError(f"memory image formats {unknown or formats} not in {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    mapping = memory_map(model, blob, formats)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".chipq-export-", dir=out_dir))
    except OSError as exc:
        raise MemoryImageError(f"{out_dir}: cannot write ({exc.strerror or exc})") from None
    try:
        names = _write_all(model, mapping, staging, formats)
        for name in names:
            replace_file(staging / name, out_dir / name)
    except OSError as exc:
        raise MemoryImageError(f"{out_dir}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return mapping


def _write_all(model: ChipModel, mapping: dict[str, Any], staging: Path, formats: list[str]) -> list[str]:
    names = []
    writers: dict[str, Callable[[str, Bank], str]] = {"hex": hex_text, "coe": coe_text}
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, ConvLayer):
            continue
        stem = layer_stem(index, layer.name)
        for bank in layer_banks(layer):
            for fmt in formats:
                if fmt in writers:
                    name = f"{stem}.{bank.name}.{fmt}"
                    (staging / name).write_text(writers[fmt](stem, bank), encoding="ascii")
                    names.append(name)
    if "hex" in formats:
        for name, text in network_texts(model)[0].items():
            (staging / name).write_text(text, encoding="ascii")
            names.append(name)
    if "h" in formats:
        (staging / HEADER_NAME).write_text(header_text(model, mapping["blob"]["sha256"]), encoding="ascii")
        names.append(HEADER_NAME)
    (staging / MAP_NAME).write_text(json.dumps(mapping, indent=2) + "\n", encoding="ascii")
    names.append(MAP_NAME)  # last: its presence means every file it names is in place
    return names


HELP = {
    "hex": "$readmemh files, one per conv layer and bank: <ll>_<name>.{presence,alpha,bias,mask}.hex, "
    "and the whole network for a layer sequencer: network.{layers,presence,alpha,bias,mask}.hex",
    "coe": "Xilinx .coe files, one per conv layer and bank: <ll>_<name>.{presence,alpha,bias,mask}.coe",
    "h": "one C99 header, chipq_rom.h, with a static const array per conv layer and bank",
}


def writer(fmt: str) -> Callable[[ChipModel, bytes, Path], dict[str, Any]]:
    """The `write(model, blob_bytes, folder) -> summary` of one format, for an export registry."""
    if fmt not in FORMATS:
        raise MemoryImageError(f"memory image format {fmt!r} not in {', '.join(FORMATS)}")

    def write(model: ChipModel, blob: bytes, folder: Path) -> dict[str, Any]:
        return write_memory_images(model, blob, folder, [fmt])

    return write
