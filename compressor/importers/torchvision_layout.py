"""torchvision's VGG layout, without torchvision: configurations and the state-dict importer.

torchvision numbers the layers of ``VGG.features`` in order: each conv, its batch norm (``*_bn``
variants only) and its ReLU take one index each, each max-pool one. A state dict therefore names a
conv ``features.<index>.weight``, and the indices alone tell which of the four VGG configurations
(A/B/D/E = VGG-11/13/16/19) and which variant (with or without batch norm) a file holds.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from chipq.floatnet.batchnorm import BN_EPS, fold_batchnorm
from chipq.floatnet.model import FloatConv, FloatPool, FloatStack, vgg_names
from chipq.importers.errors import TensorShapeMismatch, UnsupportedLayer, UnsupportedLayout

POOL = "M"  # a max-pool in a configuration list, as torchvision writes it

# Output channels of each conv, "M" for a 2x2 max-pool (Simonyan & Zisserman, table 1).
VGG_CFGS: dict[str, list[int | str]] = {
    "A": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "B": [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "D": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL],
    "E": [
        64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL,
    ],  # fmt: skip
}
VGG_DEPTH = {"A": 11, "B": 13, "D": 16, "E": 19}



def vgg_cfg(name: str, width_divisor: int = 1) -> list[int | str]:
    """A VGG configuration, channels divided by `width_divisor` (tiny test models keep the layout).

    >>> vgg_cfg("A", 16)
    [4, 'M', 8, 'M', 16, 16, 'M', 32, 32, 'M', 32, 32, 'M']
    """
    return [v if v == POOL else max(1, int(v) // width_divisor) for v in VGG_CFGS[name]]


def feature_layout(cfg: list[int | str], batch_norm: bool) -> list[str]:
    """The kind of every ``features`` index torchvision builds for `cfg`: conv, bn, relu or pool.

    >>> feature_layout([64, "M"], batch_norm=True)
    ['conv', 'bn', 'relu', 'pool']
    """
    kinds: list[str] = []
    for value in cfg:
        if value == POOL:
            kinds.append("pool")
        else:
            kinds += ["conv", "bn", "relu"] if batch_norm else ["conv", "relu"]
    return kinds


_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
_FEATURE_PARAMS = frozenset({"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})


def _as_float32(key: str, value: Any) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor exists only once PyTorch is loaded: never loaded here
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_meta:
            raise TensorShapeMismatch(f"{key}: a meta tensor (a shape without data): the file holds no weights for it")
        if value.layout != torch.strided:
            raise TensorShapeMismatch(f"{key}: a {str(value.layout).replace('torch.', '')} tensor, expected a dense one")
        if not value.is_floating_point():
            raise TensorShapeMismatch(f"{key}: dtype {value.dtype}, expected a floating-point tensor")
        return value.detach().to("cpu", torch.float32).numpy().copy()
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise TensorShapeMismatch(f"{key}: dtype {array.dtype}, expected a floating-point array")
    return array.astype(np.float32)


def _group_features(state: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """``features.N.param`` entries grouped by N; anything else but ``classifier.*`` is refused."""
    groups: dict[int, dict[str, Any]] = {}
    for key, value in state.items():
        parts = str(key).split(".")
        if parts[0] == "classifier":
            continue  # the classification head: retrieval uses the conv maps only
        is_feature = len(parts) == 3 and parts[0] == "features" and parts[1].isdigit()
        if not is_feature or parts[2] not in _FEATURE_PARAMS:
            raise UnsupportedLayer(
                f"parameter {key!r}: not a torchvision VGG parameter (expected features.N.* or classifier.*)"
            )
        groups.setdefault(int(parts[1]), {})[parts[2]] = value
    return groups


def _kind_of(index: int, params: dict[str, Any]) -> str:
    """'conv' or 'bn' for the parameters stored at one ``features`` index."""
    if "running_mean" in params or "running_var" in params:
        return "bn"
    weight = params.get("weight")
    shape = tuple(weight.shape) if weight is not None else ()
    if len(shape) == 4:
        if shape[2:] != (3, 3):
            raise UnsupportedLayer(
                f"features.{index}.weight: conv kernel {shape[2]}x{shape[3]}, only 3x3 is supported"
            )
        return "conv"
    name = f"features.{index}.weight" if weight is not None else f"features.{index}.{next(iter(params))}"
    raise UnsupportedLayer(f"{name}: shape {shape} is neither a 3x3 conv nor a batch norm")


def _match_cfg(found: dict[int, str], batch_norm: bool) -> str:
    """The configuration whose conv/bn indices are exactly `found`, else a precise refusal."""
    best: tuple[int, str] | None = None  # (first mismatching index, cfg name)
    for name, cfg in VGG_CFGS.items():
        expected = {i: k for i, k in enumerate(feature_layout(cfg, batch_norm)) if k in ("conv", "bn")}
        if expected == found:
            return name
        bad = min(i for i in set(expected) | set(found) if expected.get(i) != found.get(i))
        if best is None or bad > best[0]:
            best = (bad, name)
    assert best is not None
    index, name = best
    label = f"VGG-{VGG_DEPTH[name]}{'-BN' if batch_norm else ''}"
    convs = ",".join(str(i) for i, k in sorted(found.items()) if k == "conv")
    if index in found:
        raise UnsupportedLayout(
            f"features.{index}: a {found[index]} where no VGG-11/13/16/19 layout has one "
            f"(closest: {label}; conv indices in the file: {convs})"
        )
    expected_kind = feature_layout(VGG_CFGS[name], batch_norm)[index]
    raise UnsupportedLayout(
        f"features.{index}: {label} (the closest layout) needs a {expected_kind} here and the file has "
        f"none (conv indices in the file: {convs})"
    )


def _conv_from_params(
    index: int, params: dict[str, Any], in_channels: int, batch_norm: bool
) -> tuple[np.ndarray, np.ndarray]:
    weight = _as_float32(f"features.{index}.weight", params["weight"])
    out_ch, in_ch = weight.shape[:2]
    if in_ch != in_channels:
        raise TensorShapeMismatch(
            f"features.{index}.weight: shape {tuple(weight.shape)} takes {in_ch} input channels, "
            f"the previous layer gives {in_channels}"
        )
    if "bias" in params:
        bias = _as_float32(f"features.{index}.bias", params["bias"])
    elif batch_norm:
        bias = np.zeros(out_ch, np.float32)  # a conv built with bias=False before its batch norm adds zero
    else:
        # Without batch norm every VGG conv has a bias: a missing one is a damaged file, not a zero.
        raise TensorShapeMismatch(f"features.{index}.bias: missing (a VGG conv without batch norm has a bias)")
    if bias.shape != (out_ch,):
        raise TensorShapeMismatch(f"features.{index}.bias: shape {tuple(bias.shape)}, expected ({out_ch},)")
    return weight, bias


def _fold_bn_params(
    index: int, params: dict[str, Any], weight: np.ndarray, bias: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for param in _BN_PARAMS:
        if param not in params:
            raise TensorShapeMismatch(f"features.{index}.{param}: missing from a batch norm")
        array = _as_float32(f"features.{index}.{param}", params[param])
        if array.shape != (weight.shape[0],):
            raise TensorShapeMismatch(
                f"features.{index}.{param}: shape {tuple(array.shape)}, expected ({weight.shape[0]},)"
            )
        arrays.append(array)
    gamma, beta, mean, var = arrays
    return fold_batchnorm(weight, bias, gamma, beta, mean, var, eps)


def stack_from_state_dict(
    state: Mapping[str, Any], *, bn_eps: float | Mapping[int, float] = BN_EPS, source: str = ""
) -> FloatStack:
    """The `FloatStack` of a torchvision-layout VGG state dict (``features.N.*``).

    ``classifier.*`` entries are ignored; a ``module.`` prefix on every key (DataParallel) is
    dropped. Batch norms are folded into their convs.

    Args:
        state: parameter name -> tensor or array.
        bn_eps: batch-norm epsilon, one for all or per ``features`` index of the batch norm.
        source: recorded in the stack (usually the file name).

    Raises:
        UnsupportedLayer: a parameter that is not a VGG conv/bn parameter, or a non-3x3 conv.
        UnsupportedLayout: the indices match none of VGG-11/13/16/19 (with or without BN).
        TensorShapeMismatch: a tensor that does not fit the chain.
    """
    if state and all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    groups = _group_features(state)
    if not groups:
        raise UnsupportedLayout("no features.N.* parameters: not a torchvision VGG state dict")
    found = {index: _kind_of(index, params) for index, params in sorted(groups.items())}
    batch_norm = "bn" in found.values()
    cfg = VGG_CFGS[_match_cfg(found, batch_norm)]
    kinds = [k for k in feature_layout(cfg, batch_norm) if k in ("conv", "pool")]
    names = iter(vgg_names(kinds))
    layers: list[FloatConv | FloatPool] = []
    in_channels = 3
    for index, kind in enumerate(feature_layout(cfg, batch_norm)):
        if kind == "pool":
            layers.append(FloatPool(next(names)))
        elif kind == "conv":
            weight, bias = _conv_from_params(index, groups[index], in_channels, batch_norm)
            if batch_norm:
                eps = bn_eps.get(index + 1, BN_EPS) if isinstance(bn_eps, Mapping) else bn_eps
                weight, bias = _fold_bn_params(index + 1, groups[index + 1], weight, bias, eps)
            layers.append(FloatConv(next(names), weight, bias))
            in_channels = weight.shape[0]
    return FloatStack(layers, source=source)
