"""What `chipq demo` measured (`chipq.pipeline.demo` runs it): the result, its JSON form, and the
pure measures its rows are made of."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chipq.errors import ChipqError
from chipq.floatnet.model import vgg_names
from chipq.importers.torchvision_layout import VGG_CFGS
from chipq.quant.plan import PAPER_PLAN
from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, encode
from chipq.retrieval.scoring import Evaluation

DEFAULT_PLAN = PAPER_PLAN
METHODS = ((None, "NIP"),)  # (--rnip, label); RNIP-5/9/14 are in bench/
MODELS = ("float", "post-training", "retrained")
KINDS = (DescriptorKind.FLOAT, DescriptorKind.BYTE, DescriptorKind.BIT)


class DemoInputError(ChipqError):
    """An input of the demo that cannot be used."""


def vgg16_conv_names() -> list[str]:
    """conv1_1 .. conv5_3: the layers a demo plan covers."""
    kinds = ["pool" if entry == "M" else "conv" for entry in VGG_CFGS["D"]]
    return [name for name in vgg_names(kinds) if name.startswith("conv")]


@dataclass
class DemoResult:
    """What the demo measured; `as_dict` is its JSON form."""

    blob: str
    blob_bytes: int
    ratio: float
    onnx_identical: bool
    exact: bool
    nip_cosine_verify: float | None
    images: str = ""  # the retrieval set: its image folder and ground truth
    groundtruth: str = ""
    queries: int = 0
    database: int = 0
    rows: list[dict] = field(default_factory=list)  # one per (method, kind)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # this process's CPU time per stage

    def as_dict(self) -> dict:
        return vars(self)


def as_kind(dset: DescriptorSet, kind: DescriptorKind) -> DescriptorSet:
    """The same descriptors encoded as `kind` (8-bit, 1-bit)."""
    return DescriptorSet(dset.names, encode(dset.codes, kind), kind, dset.dim, dset.metadata)


def paired_cosine(a: DescriptorSet, b: DescriptorSet) -> float:
    """Mean cosine between the two models' descriptors of the same images."""
    rows = {name: i for i, name in enumerate(b.names)}
    pairs = [(i, rows[name]) for i, name in enumerate(a.names) if name in rows]
    return float(np.mean([float(a.codes[i] @ b.codes[j]) for i, j in pairs]))


def found_first(scored: Evaluation) -> float:
    """Share of the queries whose relevant items all rank above every other item (AP 1): with one
    relevant item per query, how often the right image comes first."""
    return float(np.mean([r.ap == 1.0 for r in scored.results]))
