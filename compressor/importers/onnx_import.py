"""ONNX model files: a Conv3x3 (+ BatchNormalization) + Relu / MaxPool2x2 chain from the input.

The graph is walked from its single image input, one consumer at a time, until the first node of
a classifier tail (`TAIL_OPS`) or the end of the graph. Any other node on the way, or a tensor that
feeds two nodes (a residual branch), is refused by op type and node name.

External data is hostile input too: every location is checked to stay inside the model's folder
(no absolute path, no ``..``, no symlink leading out) and to lie within its file before one byte of
it is read; the bytes are then read here, never by ``onnx.load``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chipq.floatnet.batchnorm import fold_batchnorm
from chipq.floatnet.model import FloatConv, FloatPool, FloatStack, vgg_names
from chipq.importers.errors import (
    TensorShapeMismatch,
    TensorTooLarge,
    TruncatedModel,
    UnsafeExternalData,
    UnsupportedLayer,
    UnsupportedLayout,
)

MAX_TENSOR_BYTES = 512 << 20  # torchvision's VGG classifier weight (25088 x 4096 float32) is 392 MiB
CHAIN_OPS = frozenset({"Conv", "BatchNormalization", "Relu", "MaxPool"})
# The first of these after the convs starts the classifier head, which retrieval does not use.
TAIL_OPS = frozenset({"Flatten", "Reshape", "Gemm", "GlobalAveragePool", "AveragePool"})
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE})


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name or '(unnamed)'!r}"


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


# --- external data ------------------------------------------------------------------------------


def _external_entries(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


MAX_LOCATION_CHARS = 255  # one file name; a longer location is refused, echoed cut short


def _check_location(tensor: TensorProto, folder: Path, model_file: Path | None = None) -> tuple[Path, int, int]:
    """The file, offset and length of an external tensor, after proving they stay in `folder`
    and are not the model file itself."""
    entries = _external_entries(tensor)
    location = entries.get("location", "")
    shown = location if len(location) <= 80 else location[:80] + "…"
    where = f"initializer {tensor.name[:80]!r}: external data location {shown!r}"
    if not location:
        raise UnsafeExternalData(f"initializer {tensor.name[:80]!r}: external data without a location")
    if len(location) > MAX_LOCATION_CHARS:
        raise UnsafeExternalData(f"{where}: {len(location)} characters, more than a file name ({MAX_LOCATION_CHARS})")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in location):
        raise UnsafeExternalData(f"{where} holds a control character (NUL, newline…); not a file name")
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise UnsafeExternalData(f"{where} is absolute; it must be relative to the model's folder")
    if ".." in posix.parts or ".." in windows.parts:
        raise UnsafeExternalData(f"{where} climbs out of the model's folder ('..')")
    target = (folder / location).resolve()
    if not target.is_relative_to(folder):
        raise UnsafeExternalData(f"{where} resolves to {target}, outside the model's folder {folder}")
    if not target.is_file():
        raise UnsafeExternalData(f"{where}: no such file in the model's folder")
    if model_file is not None and target == model_file.resolve():
        raise UnsafeExternalData(f"{where} is the model file itself, not a data file")
    try:
        offset = int(entries.get("offset", "0"))
        size = target.stat().st_size
        length = int(entries["length"]) if "length" in entries else size - offset
    except ValueError:
        raise UnsafeExternalData(f"{where}: offset/length are not integers") from None
    expected = _tensor_nbytes(tensor)
    if offset < 0 or length != expected or offset + length > size:
        raise UnsafeExternalData(
            f"{where}: bytes {offset}..{offset + length} of a {size}-byte file, "
            f"the tensor needs {expected} bytes within it"
        )
    return target, offset, length


def _type_name(tensor: TensorProto) -> str:
    try:
        return TensorProto.DataType.Name(tensor.data_type)
    except ValueError:
        return str(tensor.data_type)


def _check_float(tensor: TensorProto) -> None:
    if tensor.data_type not in FLOAT_TYPES:
        raise TensorShapeMismatch(
            f"initializer {tensor.name!r}: data type {_type_name(tensor)}, expected float, float16 or double"
        )


def _tensor_nbytes(tensor: TensorProto) -> int:
    """Bytes of the tensor's data: the product of its dims times the element size."""
    if tensor.data_type in (TensorProto.UNDEFINED, TensorProto.STRING):
        raise UnsafeExternalData(f"initializer {tensor.name!r}: type {_type_name(tensor)} cannot be external")
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError):
        raise UnsafeExternalData(
            f"initializer {tensor.name!r}: unknown data type {tensor.data_type}"
        ) from None
    count = 1
    for dim in tensor.dims:
        if dim < 0:
            raise TensorShapeMismatch(f"initializer {tensor.name!r}: negative dimension in {list(tensor.dims)}")
        count *= dim
    return count * itemsize


def _check_declared(tensor: TensorProto) -> None:
    """Dims non-negative and the declared size within `MAX_TENSOR_BYTES`, from the header alone."""
    if any(dim < 0 for dim in tensor.dims):
        raise TensorShapeMismatch(f"initializer {tensor.name!r}: negative dimension in {list(tensor.dims)}")
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return  # no fixed size (strings, undefined): refused where such a tensor is used
    count = 1
    for dim in tensor.dims:
        count *= dim
    if count * itemsize > MAX_TENSOR_BYTES:
        raise TensorTooLarge(
            f"initializer {tensor.name!r}: dims {list(tensor.dims)} declare {count * itemsize} bytes, more "
            f"than any VGG tensor ({MAX_TENSOR_BYTES} at most); refused before reading its data"
        )


class _Tensors:
    """Constant tensors (initializers and Constant nodes), external data checked up front."""

    def __init__(self, graph: onnx.GraphProto, folder: Path, model_file: Path | None = None) -> None:
        self._protos: dict[str, TensorProto] = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and len(node.output) == 1:
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    self._protos[node.output[0]] = attr.t
        # Every declared shape and size, then every location, used or not, before reading any
        # data: the file is hostile.
        for proto in self._protos.values():
            _check_declared(proto)
        self._external = {
            name: _check_location(proto, folder, model_file)
            for name, proto in self._protos.items()
            if proto.data_location == TensorProto.EXTERNAL
        }

    def __contains__(self, name: str) -> bool:
        return name in self._protos

    def array(self, name: str, owner: onnx.NodeProto) -> np.ndarray:
        """The tensor `name` as float32; `owner` is the node that uses it (for messages)."""
        proto = self._protos.get(name)
        if proto is None:
            raise UnsupportedLayer(f"{_label(owner)}: input {name!r} is computed, not a constant tensor")
        _check_float(proto)
        if name in self._external:
            target, offset, length = self._external[name]
            with target.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
            dtype = helper.tensor_dtype_to_np_dtype(proto.data_type).newbyteorder("<")
            array = np.frombuffer(data, dtype=dtype).reshape(tuple(proto.dims))
        else:
            try:
                array = numpy_helper.to_array(proto)
            except Exception as exc:
                raise TruncatedModel(f"tensor {name!r}: unreadable data ({exc})") from None
        return np.array(array, dtype=np.float32)


# --- the walk -----------------------------------------------------------------------------------


def _auto_pad(attrs: dict[str, object]) -> str:
    value = attrs.get("auto_pad", b"NOTSET")
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_conv(node: onnx.NodeProto, weight: np.ndarray) -> None:
    attrs = _attrs(node)
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise UnsupportedLayer(f"{_label(node)}: weight shape {weight.shape}, only 3x3 kernels are supported")
    auto_pad = _auto_pad(attrs)
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    # For a 3x3 kernel at stride 1, SAME padding is one element on each side.
    explicit = auto_pad == "NOTSET"
    seen = {
        "pads": (pads if explicit else auto_pad, [1, 1, 1, 1] if explicit else auto_pad),
        "strides": (list(attrs.get("strides", [1, 1])), [1, 1]),
        "dilations": (list(attrs.get("dilations", [1, 1])), [1, 1]),
        "group": (attrs.get("group", 1), 1),
    }
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedLayer(f"{_label(node)}: auto_pad {auto_pad} (a chip conv pads 1 on each side)")
    for field, (value, wanted) in seen.items():
        if value != wanted:
            raise UnsupportedLayer(
                f"{_label(node)}: {field} {value} (a chip conv is 3x3, stride 1, pad 1, dilation 1, group 1)"
            )


def _check_pool(node: onnx.NodeProto, used: set[str]) -> None:
    attrs = _attrs(node)
    seen = {
        "kernel_shape": (list(attrs.get("kernel_shape", [])), [2, 2]),
        "strides": (list(attrs.get("strides", [1, 1])), [2, 2]),
        "pads": (list(attrs.get("pads", [0, 0, 0, 0])), [0, 0, 0, 0]),
        "auto_pad": (_auto_pad(attrs), "NOTSET"),
        "dilations": (list(attrs.get("dilations", [1, 1])), [1, 1]),
        "ceil_mode": (attrs.get("ceil_mode", 0), 0),
    }
    if seen["auto_pad"][0] == "VALID":  # no padding, same as NOTSET with zero pads
        seen["auto_pad"] = ("NOTSET", "NOTSET")
    for field, (value, wanted) in seen.items():
        if value != wanted:
            raise UnsupportedLayer(f"{_label(node)}: {field} {value} (only a 2x2, stride 2, floor max-pool)")
    if len(node.output) > 1 and node.output[1] and node.output[1] in used:
        raise UnsupportedLayer(f"{_label(node)}: its indices output is used")


def _fold_bn(node: onnx.NodeProto, tensors: _Tensors, weight: np.ndarray, bias: np.ndarray):
    attrs = _attrs(node)
    if attrs.get("training_mode", 0) != 0:
        raise UnsupportedLayer(f"{_label(node)}: training_mode 1 (export the model in eval mode)")
    if len(node.input) != 5:
        raise UnsupportedLayer(f"{_label(node)}: {len(node.input)} inputs, expected 5")
    params = [tensors.array(name, node) for name in node.input[1:]]
    for name, array in zip(node.input[1:], params):
        if array.shape != (weight.shape[0],):
            raise TensorShapeMismatch(
                f"{_label(node)}: {name!r} shape {array.shape}, expected ({weight.shape[0]},)"
            )
    gamma, beta, mean, var = params
    return fold_batchnorm(weight, bias, gamma, beta, mean, var, float(attrs.get("epsilon", 1e-5)))


def _graph_input(graph: onnx.GraphProto, tensors: _Tensors) -> str:
    inputs = [i.name for i in graph.input if i.name not in tensors]
    if len(inputs) != 1:
        raise UnsupportedLayout(f"graph has {len(inputs)} data inputs {inputs}, expected one image input")
    return inputs[0]


@dataclass
class _Pending:
    """A conv (and the batch norm folded into it) waiting for its Relu."""

    node: onnx.NodeProto
    weight: np.ndarray
    bias: np.ndarray
    has_bn: bool = False


def _conv(node: onnx.NodeProto, tensors: _Tensors, in_channels: int) -> _Pending:
    weight = tensors.array(node.input[1], node) if len(node.input) > 1 else np.zeros(0, np.float32)
    _check_conv(node, weight)
    if weight.shape[1] != in_channels:
        raise TensorShapeMismatch(
            f"{_label(node)}: weight shape {weight.shape} takes {weight.shape[1]} channels, "
            f"the previous layer gives {in_channels}"
        )
    if len(node.input) > 2 and node.input[2]:
        bias = tensors.array(node.input[2], node)
    else:
        bias = np.zeros(weight.shape[0], np.float32)
    if bias.shape != (weight.shape[0],):
        raise TensorShapeMismatch(f"{_label(node)}: bias shape {bias.shape}, expected ({weight.shape[0]},)")
    return _Pending(node, weight, bias)


def _next_node(tensor: str, consumers: dict[str, list[onnx.NodeProto]]) -> onnx.NodeProto | None:
    """The one chain node reading `tensor`; None at the end of the chain (tail or graph end)."""
    users = consumers.get(tensor, [])
    odd = [n for n in users if n.op_type not in CHAIN_OPS | TAIL_OPS]
    if odd:
        raise UnsupportedLayer(f"{_label(odd[0])}: op {odd[0].op_type} is not supported in a VGG conv chain")
    if len(users) > 1:
        raise UnsupportedLayer(
            f"{_label(users[1])}: tensor {tensor!r} also feeds {_label(users[0])}; branches are not supported"
        )
    if not users or users[0].op_type in TAIL_OPS:
        return None
    if users[0].input[0] != tensor:
        raise UnsupportedLayer(
            f"{_label(users[0])}: the chain reaches it through {tensor!r}, not its data input"
        )
    return users[0]


def _check_tail(users: list[onnx.NodeProto], layers: list) -> None:
    """An average pool ends the chain only as a classifier's pooling, after the last max-pool.

    Anywhere else it stands where VGG max-pools: taking it for the classifier would silently cut
    the network short.
    """
    if users and users[0].op_type == "AveragePool" and (not layers or layers[-1] is not None):
        raise UnsupportedLayer(
            f"{_label(users[0])}: an average pool inside the conv chain (the chip max-pools); only a "
            "classifier's pooling after the last MaxPool is ignored"
        )


def stack_from_onnx(model: onnx.ModelProto, folder: Path, source: str = "", model_file: Path | None = None) -> FloatStack:
    """The `FloatStack` of an ONNX model whose external data (if any) lives in `folder`.

    `model_file`, when given, is the file the model was read from: no external data may point at it.

    Raises:
        UnsupportedLayer: a node that is not part of a plain VGG conv chain, named by op and name.
        UnsupportedLayout: no single input, or no conv at all.
        TensorShapeMismatch: channel counts that do not chain, or non-float weights.
        UnsafeExternalData: external data outside `folder` or out of bounds.
    """
    graph = model.graph
    tensors = _Tensors(graph, folder.resolve(), model_file)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            if name:
                consumers.setdefault(name, []).append(node)
    used = set(consumers) | {output.name for output in graph.output}
    layers: list[_Pending | None] = []  # a finished conv, or None for a max-pool
    pending: _Pending | None = None
    in_channels = 3
    tensor = _graph_input(graph, tensors)
    while (node := _next_node(tensor, consumers)) is not None:
        if pending is not None and node.op_type not in ("BatchNormalization", "Relu"):
            raise UnsupportedLayer(f"{_label(node)}: follows {_label(pending.node)} without a Relu between")
        if node.op_type == "Conv":
            pending = _conv(node, tensors, in_channels)
            in_channels = pending.weight.shape[0]
        elif node.op_type == "BatchNormalization":
            if pending is None or pending.has_bn:
                raise UnsupportedLayer(f"{_label(node)}: a batch norm must follow a Conv directly")
            pending.weight, pending.bias = _fold_bn(node, tensors, pending.weight, pending.bias)
            pending.has_bn = True
        elif node.op_type == "Relu":
            if pending is None:
                raise UnsupportedLayer(f"{_label(node)}: a Relu must follow a Conv (or its batch norm)")
            layers.append(pending)
            pending = None
        else:  # MaxPool
            _check_pool(node, used)
            layers.append(None)
        tensor = node.output[0]
    if pending is not None:
        raise UnsupportedLayer(f"{_label(pending.node)}: not followed by a Relu")
    _check_tail(consumers.get(tensor, []), layers)
    if all(layer is None for layer in layers):
        raise UnsupportedLayout("no Conv node reachable from the graph input")
    names = vgg_names(["pool" if layer is None else "conv" for layer in layers])
    stack_layers: list[FloatConv | FloatPool] = [
        FloatPool(name) if layer is None else FloatConv(name, layer.weight, layer.bias)
        for name, layer in zip(names, layers)
    ]
    return FloatStack(stack_layers, source=source)


def load_onnx(path: str | os.PathLike[str]) -> FloatStack:
    """The `FloatStack` of the ONNX file `path` (external data relative to its folder).

    Raises:
        TruncatedModel: the protobuf cannot be parsed.
        ModelImportError: any other refusal, see `stack_from_onnx`.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_TENSOR_BYTES * 2:
        raise TensorTooLarge(f"{path}: {size} bytes, more than the {MAX_TENSOR_BYTES * 2} an ONNX VGG needs")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TruncatedModel(f"{path}: cannot parse ONNX (truncated or corrupt): {first_line}") from None
    try:
        return stack_from_onnx(model, path.absolute().parent, source=path.name, model_file=path)
    except (UnsupportedLayer, UnsupportedLayout, TensorShapeMismatch, UnsafeExternalData, TruncatedModel, TensorTooLarge) as exc:
        raise type(exc)(f"{path}: {exc}") from None
