"""One error type per way a model file can be refused.

Every message is one line naming the file and, where there is one, the parameter or node at fault
and the values seen. The CLI prints it and exits with code 2 (bad input).
"""

from __future__ import annotations

from chipq.errors import ChipqError


class ModelImportError(ChipqError):
    """Root of every model-import failure."""


class ModelNotFound(ModelImportError):
    """The path does not exist or is not a regular file."""


class UnknownModelFormat(ModelImportError):
    """The file is neither a PyTorch file (pickle, zip archive, TorchScript) nor ONNX."""


class TruncatedModel(ModelImportError):
    """The file has a known format but cannot be decoded: cut short or corrupt."""


class UnsafePickle(ModelImportError):
    """The pickle needs code (a class or function) to load; chipq loads plain tensors only."""


class UnsupportedLayer(ModelImportError):
    """A parameter, module or ONNX node that is not a 3x3 conv, batch norm, ReLU or 2x2 max-pool."""


class UnsupportedLayout(ModelImportError):
    """The layers are each supported but their arrangement is not a VGG conv chain."""


class TensorShapeMismatch(ModelImportError):
    """A tensor's shape or dtype disagrees with the layer it belongs to."""


class NonFiniteWeights(ModelImportError):
    """A weight or bias is NaN or infinite: no quantization of it means anything."""


class WeightOutOfRange(NonFiniteWeights):
    """A finite weight or bias beyond what the chip can hold (a `NonFiniteWeights` for callers that
    catch that: no quantization of it means anything either)."""


class TensorTooLarge(ModelImportError):
    """A tensor announces more elements than any VGG layer has; refused before its data is read."""


class UnsafeExternalData(ModelImportError):
    """An ONNX external-data location that leaves the model's folder, or data out of bounds."""
