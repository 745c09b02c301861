"""PyTorch files: every accepted packaging gives the same stack; every refusal is one precise line."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_vgg
from modelcraft import image_batch

from chipq.errors import ChipqError
from chipq.floatnet.torchnet import stack_to_torch
from chipq.importers import load_model
from chipq.importers.errors import (
    ModelNotFound,
    TensorShapeMismatch,
    TruncatedModel,
    UnknownModelFormat,
    UnsafePickle,
    UnsupportedLayer,
    UnsupportedLayout,
)
from chipq.importers.torchvision_layout import stack_from_state_dict

CONV_COUNTS = {"A": 8, "B": 10, "D": 13, "E": 16}


def features_only(model: torch.nn.Module) -> OrderedDict:
    return OrderedDict((k, v) for k, v in model.state_dict().items() if k.startswith("features."))


def assert_same_stack(a, b) -> None:
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]
    for x, y in zip(a.conv_layers(), b.conv_layers()):
        assert x.weight.dtype == np.float32 and x.bias.dtype == np.float32
        assert np.array_equal(x.weight, y.weight) and np.array_equal(x.bias, y.bias), x.name


def save(obj, path: Path, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


def one_line_error(exc_info) -> str:
    """The message, checked to be what the CLI prints: one line, exit code 2."""
    message = str(exc_info.value)
    assert isinstance(exc_info.value, ChipqError) and exc_info.value.exit_code == 2
    assert "\n" not in message
    return message


@pytest.mark.parametrize("cfg", ["A", "B", "D", "E"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_every_vgg_cfg_is_recognised_from_its_indices(tmp_path, cfg, batch_norm):
    model = tiny_vgg(cfg, batch_norm=batch_norm)
    stack = load_model(save(model.state_dict(), tmp_path / "m.pt"))
    assert len(stack.conv_layers()) == CONV_COUNTS[cfg]
    assert sum(1 for layer in stack.layers if layer.name.startswith("pool")) == 5
    last_conv = {"A": "conv5_2", "B": "conv5_2", "D": "conv5_3", "E": "conv5_4"}[cfg]
    assert stack.conv_layers()[-1].name == last_conv
    assert stack.source == "m.pt"


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": sd, "epoch": 7, "arch": "vgg16"},
        lambda sd: {"model": {"state_dict": sd}},
        lambda sd: OrderedDict(("module." + k, v) for k, v in sd.items()),  # nn.DataParallel
    ],
    ids=["bare", "state_dict", "model+extras", "nested", "dataparallel"],
)
def test_wrapped_state_dicts_and_classifier_give_the_same_stack(tmp_path, wrap):
    model = tiny_vgg("D", classifier=True)
    reference = stack_from_state_dict(features_only(model))
    assert any(k.startswith("classifier.") for k in model.state_dict())
    assert_same_stack(load_model(save(wrap(model.state_dict()), tmp_path / "m.pth")), reference)


def test_legacy_non_zip_serialisation_loads(tmp_path):
    model = tiny_vgg("D")
    path = save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"  # a bare pickle, not a zip
    assert_same_stack(load_model(path), stack_from_state_dict(model.state_dict()))


def test_bn_is_folded_into_the_conv(tmp_path):
    model = tiny_vgg("D", batch_norm=True)
    stack = load_model(save(model.state_dict(), tmp_path / "bn.pt"))
    x = image_batch()
    with torch.no_grad():
        want = model.features(x)
        got = stack_to_torch(stack)(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5 * float(want.abs().max()))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still in use
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archives_load_with_their_bn_eps(tmp_path, how):
    # eps 1e-3 differs from the default 1e-5: a wrong eps shows up in the output.
    model = tiny_vgg("D", batch_norm=True, classifier=True, bn_eps=1e-3)
    x = image_batch()
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x, check_trace=False)
    scripted.save(str(tmp_path / "ts.pt"))
    stack = load_model(tmp_path / "ts.pt")
    with torch.no_grad():
        want = model.features(x)
        got = stack_to_torch(stack)(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5 * float(want.abs().max()))


# --- refusals ----------------------------------------------------------------------------------


class RunsAShellCommand:
    """A pickle payload that would run a shell command when unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_needs_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "was_run"
    state = features_only(tiny_vgg("A"))
    state["features.99.weight"] = RunsAShellCommand(marker)  # type: ignore[assignment]
    path = save(state, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickle) as exc_info:
        load_model(path)
    message = one_line_error(exc_info)
    assert "needs code" in message and "system" in message and str(path) in message
    assert not marker.exists()


def test_a_whole_module_object_is_refused_as_needing_code(tmp_path):
    path = save(tiny_vgg("A"), tmp_path / "module.pt")
    with pytest.raises(UnsafePickle) as exc_info:
        load_model(path)
    assert "state_dict" in one_line_error(exc_info)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_truncated_file_is_one_clear_line(tmp_path, legacy):
    whole = save(tiny_vgg("A").state_dict(), tmp_path / "whole.pt", _use_new_zipfile_serialization=not legacy)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(TruncatedModel) as exc_info:
        load_model(cut)
    message = one_line_error(exc_info)
    assert "truncated or corrupt" in message and "cut.pt" in message


def test_a_non_3x3_conv_is_refused_by_name(tmp_path):
    state = features_only(tiny_vgg("D"))
    state["features.5.weight"] = torch.zeros(16, 8, 5, 5)
    with pytest.raises(UnsupportedLayer) as exc_info:
        load_model(save(state, tmp_path / "k5.pt"))
    assert "features.5.weight: conv kernel 5x5" in one_line_error(exc_info)


def test_a_resnet_state_dict_is_refused_naming_its_first_parameter(tmp_path):
    state = OrderedDict([("conv1.weight", torch.zeros(64, 3, 7, 7)), ("bn1.weight", torch.ones(64))])
    with pytest.raises(UnsupportedLayer) as exc_info:
        load_model(save(state, tmp_path / "resnet.pt"))
    assert "'conv1.weight'" in one_line_error(exc_info)


def test_a_layout_that_is_no_vgg_names_the_first_odd_index(tmp_path):
    state = features_only(tiny_vgg("D"))
    del state["features.28.weight"], state["features.28.bias"]  # drop conv5_3
    with pytest.raises(UnsupportedLayout) as exc_info:
        load_model(save(state, tmp_path / "short.pt"))
    message = one_line_error(exc_info)
    assert "features.28" in message and "VGG-16" in message


def test_channels_that_do_not_chain_are_refused(tmp_path):
    state = features_only(tiny_vgg("A"))
    state["features.3.weight"] = torch.zeros(8, 5, 3, 3)  # conv2_1 takes 4 channels
    with pytest.raises(TensorShapeMismatch) as exc_info:
        load_model(save(state, tmp_path / "chain.pt"))
    assert "features.3.weight" in one_line_error(exc_info)


def test_integer_weights_are_refused(tmp_path):
    state = features_only(tiny_vgg("A"))
    state["features.0.weight"] = torch.zeros(4, 3, 3, 3, dtype=torch.int8)
    with pytest.raises(TensorShapeMismatch, match="features.0.weight: dtype torch.int8"):
        load_model(save(state, tmp_path / "int.pt"))


def test_a_dict_without_a_state_dict_is_refused(tmp_path):
    with pytest.raises(UnsupportedLayout, match="no state dict found"):
        load_model(save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "opt.pt"))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelNotFound) as exc_info:
        load_model(tmp_path / "nope.pt")
    assert "no such file" in one_line_error(exc_info)
    with pytest.raises(ModelNotFound, match="not a regular file"):
        load_model(tmp_path)


def test_unknown_formats(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(UnknownModelFormat) as exc_info:
        load_model(text)
    assert "notes.txt" in one_line_error(exc_info)
    npz = tmp_path / "weights.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(UnknownModelFormat, match="zip archive but not a PyTorch file"):
        load_model(npz)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(TruncatedModel, match="empty file"):
        load_model(empty)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(TruncatedModel, match="without a zip or pickle header"):
        load_model(junk)
