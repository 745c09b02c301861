"""chipq: compress a VGG-16 retrieval descriptor extractor for an integer ASIC, and prove it works.

The public API, for library users (everything else may change between releases)::

    import chipq

    stack = chipq.load_model("vgg16.pt")                       # float model (.pt / .onnx)
    calib = chipq.calibration_batch("photos/")                 # uint8 (N, 3, 224, 224)
    plan = chipq.parse_plan(chipq.PAPER_PLAN, [conv.name for conv in stack.conv_layers()])
    model = chipq.compress(stack, plan, calib).model
    chipq.write_blob(model, "vgg16.blob")                      # chip format v1 (formats/SPEC.md)
    model = chipq.read_blob("vgg16.blob")                      # hostile-input reader
    maps = chipq.FastExecutor(model).run(calib)                # uint8 conv5_3 maps, bit-exact
    vector = chipq.describe(chipq.load_image("a.jpg"), chipq.chip_features(model))  # NIP, 512-D

`chipq.compress` is the post-training quantization step on objects in memory. The whole of
`chipq compress` (a model file or stack in, every route: retraining by default, ``retrain=None``
for post-training only, ``plan="auto"`` with a budget; the blob written when `output` is given) is
`chipq.pipeline.compress.compress`; the other workflows (plan, verify, demo) live in `chipq.pipeline` too.

Names are loaded on first use, so ``import chipq`` stays light (no PyTorch until needed).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_model": "chipq.importers",
    "FloatStack": "chipq.floatnet.model",
    "parse_plan": "chipq.quant.plan",
    "PAPER_PLAN": "chipq.quant.plan",
    "calibration_batch": "chipq.quant.calibrate",
    "compress": "chipq.quant.compress",
    "CompressResult": "chipq.quant.compress",
    "compress_retrained": "chipq.retrain.pipeline",
    "RetrainConfig": "chipq.retrain.config",
    "ChipModel": "chipq.formats.model",
    "read_blob": "chipq.formats.reader",
    "from_bytes": "chipq.formats.reader",
    "write_blob": "chipq.formats.writer",
    "to_bytes": "chipq.formats.writer",
    "FastExecutor": "chipq.executor.fast",
    "GoldenExecutor": "chipq.executor.golden",
    "load_image": "chipq.images",
    "describe": "chipq.retrieval.describe",
    "chip_features": "chipq.retrieval.features",
    "float_features": "chipq.retrieval.features",
    "load_descriptors": "chipq.retrieval.descriptors",
    "save_descriptors": "chipq.retrieval.descriptors",
    "ChipqError": "chipq.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'chipq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
