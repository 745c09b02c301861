"""The network behind a descriptor: a chip blob or a float model, loaded once, for extract and search.

`chipq.retrieval` describes images with any feature function and loads no model; this module is
where a blob or a model file becomes one (`load_network`), and where a Ray worker turns the model
bytes it was sent into one (`features_from_source`).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chipq.errors import UsageError
from chipq.formats import constants as C
from chipq.formats.model import ChipModel
from chipq.retrieval.describe import FeatureFn


@dataclass(frozen=True)
class Network:
    """A loaded blob or float model, with what a descriptor file records about it."""

    model: object  # ChipModel or FloatStack (without its trailing pool)
    label: str  # the metadata's "model": "blob:NAME" or "model:NAME"
    identity: dict  # {"blob_sha256": ...} (the file's bytes) or {"model_sha256": ...} (the weights)
    default_input: tuple[int, int]  # (height, width): the blob's input buffer, 224x224 for a model

    @property
    def layers(self):
        return self.model.layers

    def features(self, batch: int) -> FeatureFn:
        """The feature function (`chipq.retrieval.features`) with `batch` inputs per call."""
        from chipq.retrieval.features import chip_features, float_features

        if isinstance(self.model, ChipModel):
            return chip_features(self.model, batch)
        return float_features(self.model, batch)


def load_network(*, blob: Path | None = None, model: Path | None = None) -> Network:
    """Load exactly one of a blob (`chipq.formats.reader.read_blob_bytes`: a format error names the
    file) or a float model (`chipq.importers.load_model`)."""
    if (blob is None) == (model is None):
        raise UsageError("give exactly one of --blob BLOB or --model MODEL")
    if blob is not None:
        from chipq.formats.reader import read_blob_bytes

        chip, data = read_blob_bytes(blob)
        identity = {"blob_sha256": hashlib.sha256(data).hexdigest()}
        return Network(chip, f"blob:{Path(blob).name}", identity, (chip.input_height, chip.input_width))
    from chipq.importers import load_model

    stack = load_model(model).without_trailing_pool()
    return Network(stack, f"model:{Path(model).name}", {"model_sha256": stack.weights_sha256()}, C.CHIP_INPUT_HW)


def features_from_source(source, batch: int) -> FeatureFn:
    """The feature function of a `chipq.retrieval.distributed.Source` (model bytes sent to a Ray
    worker), loaded from a temporary file as `load_network` loads the original."""
    with tempfile.TemporaryDirectory(prefix="chipq-worker-") as tmp:
        path = Path(tmp) / source.name
        path.write_bytes(source.data)
        network = load_network(**{source.kind: path})
        return network.features(batch)
