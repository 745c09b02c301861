"""Values a model file can lie with: each refused in one line before any arithmetic runs on it."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import onnx
import pytest
import torch
from helpers import tiny_vgg
from onnx import TensorProto, helper, numpy_helper
from test_external_data import set_external, write_model

from chipq.importers import MAX_WEIGHT, load_model
from chipq.importers.errors import NonFiniteWeights, TensorShapeMismatch, UnsafeExternalData, UnsupportedLayer


def features(model: torch.nn.Module) -> OrderedDict:
    return OrderedDict((k, v) for k, v in model.state_dict().items() if k.startswith("features."))


def test_a_missing_conv_bias_without_batch_norm_is_refused_not_zeroed(tmp_path):
    state = features(tiny_vgg("A"))
    del state["features.0.bias"]
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(TensorShapeMismatch, match=r"features\.0\.bias: missing"):
        load_model(tmp_path / "m.pt")


def test_a_conv_without_bias_before_its_batch_norm_still_loads(tmp_path):
    state = features(tiny_vgg("A", batch_norm=True))
    del state["features.0.bias"]  # bias=False before a batch norm is common and means zero
    torch.save(state, tmp_path / "m.pt")
    assert len(load_model(tmp_path / "m.pt").conv_layers()) == 8


def test_one_finite_but_extreme_weight_is_refused(tmp_path):
    state = features(tiny_vgg("A"))
    state["features.3.weight"][0, 0, 0, 0] = 3e38
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(NonFiniteWeights, match=f"conv2_1: a weight of magnitude 3e\\+38, beyond the {MAX_WEIGHT:,}"):
        load_model(tmp_path / "m.pt")


@pytest.mark.parametrize("make", [lambda t: torch.empty_like(t, device="meta"), lambda t: t.to_sparse()], ids=["meta", "sparse"])
def test_meta_and_sparse_tensors_are_refused(tmp_path, make):
    state = features(tiny_vgg("A"))
    state["features.0.weight"] = make(state["features.0.weight"])
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(TensorShapeMismatch, match=r"features\.0\.weight: a (meta|sparse)"):
        load_model(tmp_path / "m.pt")


@pytest.mark.parametrize(
    "location, says",
    [("weights\x00.bin", "control character"), ("w" * 5000, "5000 characters"), ("m.onnx", "the model file itself")],
    ids=["nul", "long", "itself"],
)
def test_external_data_locations_that_cannot_be_data_files(tmp_path, location, says):
    path = write_model(tmp_path / "model")
    set_external(path, location=location)
    with pytest.raises(UnsafeExternalData, match=says) as info:
        load_model(path)
    assert len(str(info.value)) < 400  # a long location is never echoed whole


def test_an_average_pool_where_vgg_max_pools_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (4, 3, 3, 3)), ("b1", (4,)), ("w2", (4, 4, 3, 3)), ("b2", (4,)))]  # fmt: skip
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="c1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("AveragePool", ["r1"], ["p1"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="c2", **conv),
        helper.make_node("Relu", ["c2"], ["y"], name="r2"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)  # fmt: skip
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    with pytest.raises(UnsupportedLayer, match="AveragePool node 'p1': an average pool inside the conv chain"):
        load_model(tmp_path / "m.onnx")
