"""`chipq export BLOB --format c`: the C99 reference executor of SPEC section 4, for a chip team.

The C sources are package data (`chipq/export/c/`): `chipq_ref.c` (libc only) and a `Makefile`.
`make -C DIR` builds `DIR/chipq_ref`; `DIR/chipq_ref BLOB PIXELS.u8 OUTDIR` reads the blob as hostile
input (every check of SPEC 5, the error types of `chipq.formats.errors`, exit 2 on any failure) and
writes every layer's uint8 output map as `OUTDIR/<l:02d>_<name>.u8`, C-order (C, H, W): the numbering
and names of `chipq verify --vectors`, equal to the golden executor on every element.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from chipq.formats import constants as C
from chipq.formats.model import ChipModel, layer_stem

HELP = "C99 reference executor (chipq_ref.c + Makefile; `make -C DIR`, then `DIR/chipq_ref BLOB PIXELS.u8 OUTDIR`)"
SOURCES = ("chipq_ref.c", "Makefile")
BINARY = "chipq_ref"


def source_dir():
    """The packaged C sources (a Traversable: a folder in a checkout or an installed wheel)."""
    return resources.files("chipq.export") / "c"


def spec_text() -> str:
    return (resources.files("chipq.formats") / "SPEC.md").read_text(encoding="utf-8")


def export_c(model: ChipModel, blob: bytes, out_dir: Path) -> dict[str, Any]:
    """Write the C model into the empty folder `out_dir`: sources, Makefile, SPEC.md, README.md.

    The sources do not depend on the blob (chipq_ref reads any v1 or v2 blob at run time); the README
    states this blob's input contract and output files.
    """
    out_dir = Path(out_dir)
    for name in SOURCES:
        with resources.as_file(source_dir() / name) as path:
            shutil.copyfile(path, out_dir / name)
    (out_dir / "SPEC.md").write_text(spec_text(), encoding="utf-8")
    (out_dir / "README.md").write_text(readme(model), encoding="utf-8")
    return {"sources": list(SOURCES), "binary": BINARY, "build": "make -C DIR", "run": f"DIR/{BINARY} BLOB PIXELS.u8 OUTDIR"}


def readme(model: ChipModel) -> str:
    order = C.ChannelOrder(model.channel_order).name
    height, width, lines = model.input_height, model.input_width, []
    for index, layer in enumerate(model.layers):
        if layer.kind == C.LayerKind.MAXPOOL2X2:
            height, width = height // C.POOL_SIZE, width // C.POOL_SIZE
        lines.append(f"    {layer_stem(index, layer.name)}.u8  {layer.out_channels}x{height}x{width}")
    return "\n".join(
        [
            "# chipq C reference model",
            "",
            "A C99 executor (libc only) of chipq chip format v1 and v2, exact to SPEC.md section 4; a v2",
            "layer's narrow alpha codes and pruned kernels (SPEC.md 3.4, 3.5) are read as the chip reads them.",
            "",
            "    make                                  # builds ./chipq_ref with cc (CC=, CFLAGS= to change)",
            "    ./chipq_ref BLOB PIXELS.u8 OUTDIR     # every layer's uint8 output map",
            "    ./chipq_ref --check BLOB              # only read and check the blob",
            "",
            f"For the blob this folder was exported from (chipq-export.json), PIXELS.u8 is "
            f"{C.INPUT_CHANNELS * model.input_height * model.input_width} bytes: uint8 C-order "
            f"(3, {model.input_height}, {model.input_width}), planes in {order} order; the chip subtracts "
            f"the mean {tuple(model.input_mean)}. OUTDIR (created if missing; its parent must exist) receives, uint8 C-order (C, H, W):",
            "",
            *lines,
            "",
            "The blob is read as hostile input: every check of SPEC.md section 5 in its order, the",
            "accumulator bound of section 4.5 included. Any failure prints one line",
            "`chipq_ref: <ErrorType>: <message>` on stderr (the error types of chipq's Python reader)",
            "and exits 2; so do a pixel file of the wrong size and an OUTDIR that cannot be written.",
            "",
        ]
    )
