"""ONNX files: the extracted stack reproduces onnxruntime's conv5_3; other graphs are refused by node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import tiny_vgg
from modelcraft import export_onnx, image_batch, last_relu_output, run_onnx_tap, with_external_data
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from chipq.floatnet.torchnet import stack_to_torch
from chipq.importers import load_model
from chipq.importers.errors import TruncatedModel, UnsupportedLayer


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def conv5_3_from_stack(stack, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return stack_to_torch(stack)(x, until=stack.conv_layers()[-1].name).numpy()


@pytest.mark.parametrize(
    "variant", ["plain", "bn", "external", "bn+external", "initializers-as-inputs"]
)
def test_the_stack_reproduces_onnxruntime_conv5_3(tmp_path, variant):
    batch_norm = variant.startswith("bn")
    model = tiny_vgg("D", batch_norm=batch_norm, classifier=True, seed=3)
    path = export_onnx(model, tmp_path / "m.onnx", fold_bn=not batch_norm,
                       initializers_as_inputs=variant == "initializers-as-inputs")  # fmt: skip
    graph = onnx.load(str(path)).graph
    # The exporter must have kept the batch norms, or this would not test folding them.
    assert any(n.op_type == "BatchNormalization" for n in graph.node) == batch_norm
    assert any(n.op_type == "Gemm" for n in graph.node)  # the classifier tail is there and ignored
    if "external" in variant:
        (tmp_path / "ext").mkdir()
        path = with_external_data(path, tmp_path / "ext" / "m.onnx")
        assert (tmp_path / "ext" / "weights.bin").stat().st_size > 0
    stack = load_model(path)
    assert stack.conv_layers()[-1].name == "conv5_3" and len(stack.conv_layers()) == 13
    x = image_batch(2, hw=(48, 64), seed=5)  # not the export size: H and W are dynamic
    want = run_onnx_tap(path, last_relu_output(onnx.load(str(path), load_external_data=False)), x.numpy())
    got = conv5_3_from_stack(stack, x)
    assert got.shape == want.shape and np.abs(want).max() > 0
    assert relative_error(got, want) <= 1e-4


def test_pt_and_onnx_of_the_same_weights_give_bit_equal_stacks(tmp_path):
    model = tiny_vgg("D", classifier=True, seed=4)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    from_pt = load_model(tmp_path / "m.pt")
    from_onnx = load_model(export_onnx(model, tmp_path / "m.onnx"))
    assert [layer.name for layer in from_pt.layers] == [layer.name for layer in from_onnx.layers]
    for a, b in zip(from_pt.conv_layers(), from_onnx.conv_layers()):
        assert a.weight.dtype == b.weight.dtype == np.float32
        assert a.weight.tobytes() == b.weight.tobytes() and a.bias.tobytes() == b.bias.tobytes(), a.name


# --- refusals: hand-built graphs, each lying about one thing ------------------------------------


def conv_node(name, x, out, w, b, **attrs):
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], **attrs}
    return helper.make_node("Conv", [x, w, b], [out], name=name, **attrs)


def conv_params(name, cin, cout, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        numpy_helper.from_array(rng.standard_normal((cout, cin, k, k)).astype(np.float32), f"{name}.w"),
        numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}.b"),
    ]


def save_graph(tmp_path, nodes, inits, out="y", name="g.onnx"):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def test_a_residual_block_is_refused_naming_the_add(tmp_path):
    # conv -> relu -> conv -> add(relu output) -> relu: the smallest ResNet block.
    nodes = [
        conv_node("stem", "image", "s", "stem.w", "stem.b"),
        helper.make_node("Relu", ["s"], ["r"], name="stem_relu"),
        conv_node("block_conv", "r", "c", "block_conv.w", "block_conv.b"),
        helper.make_node("Add", ["c", "r"], ["a"], name="residual_add"),
        helper.make_node("Relu", ["a"], ["y"], name="out_relu"),
    ]
    inits = conv_params("stem", 3, 4) + conv_params("block_conv", 4, 4)
    with pytest.raises(UnsupportedLayer) as exc_info:
        load_model(save_graph(tmp_path, nodes, inits))
    message = str(exc_info.value)
    assert "Add node 'residual_add'" in message and "\n" not in message


def test_an_exported_resnet_stem_is_refused_naming_its_conv(tmp_path):
    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 7, stride=2, padding=3)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = torch.relu(self.conv1(x))
            return torch.relu(self.conv2(y) + y)

    path = export_onnx(TinyResNet().eval(), tmp_path / "resnet.onnx")
    with pytest.raises(UnsupportedLayer, match=r"Conv node '/conv1/Conv'.*7, 7"):
        load_model(path)


@pytest.mark.parametrize(
    "attrs, field",
    [
        ({"strides": [2, 2]}, "strides"),
        ({"pads": [0, 0, 0, 0]}, "pads"),
        ({"dilations": [2, 2]}, "dilations"),
    ],
)
def test_a_conv_the_chip_cannot_run_is_refused_with_the_field(tmp_path, attrs, field):
    nodes = [
        conv_node("c1", "image", "c", "c1.w", "c1.b", **attrs),
        helper.make_node("Relu", ["c"], ["y"], name="r1"),
    ]
    with pytest.raises(UnsupportedLayer, match=f"Conv node 'c1': {field}"):
        load_model(save_graph(tmp_path, nodes, conv_params("c1", 3, 4)))


def test_an_unknown_op_inside_the_chain_is_named(tmp_path):
    nodes = [
        conv_node("c1", "image", "c", "c1.w", "c1.b"),
        helper.make_node("LeakyRelu", ["c"], ["y"], name="leaky"),
    ]
    with pytest.raises(UnsupportedLayer, match="LeakyRelu node 'leaky'"):
        load_model(save_graph(tmp_path, nodes, conv_params("c1", 3, 4)))


def test_a_conv_without_relu_and_a_bad_pool_are_refused(tmp_path):
    no_relu = [
        conv_node("c1", "image", "c", "c1.w", "c1.b"),
        helper.make_node("MaxPool", ["c"], ["y"], name="p", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    with pytest.raises(UnsupportedLayer, match="MaxPool node 'p': follows Conv node 'c1' without a Relu"):
        load_model(save_graph(tmp_path, no_relu, conv_params("c1", 3, 4), name="a.onnx"))
    big_pool = [
        conv_node("c1", "image", "c", "c1.w", "c1.b"),
        helper.make_node("Relu", ["c"], ["r"], name="r1"),
        helper.make_node("MaxPool", ["r"], ["y"], name="p3", kernel_shape=[3, 3], strides=[2, 2]),
    ]
    with pytest.raises(UnsupportedLayer, match=r"MaxPool node 'p3': kernel_shape \[3, 3\]"):
        load_model(save_graph(tmp_path, big_pool, conv_params("c1", 3, 4), name="b.onnx"))


def test_a_hand_built_chain_with_bn_and_a_flatten_tail_is_read(tmp_path):
    """BatchNormalization with its own epsilon is folded exactly as the definition says."""
    rng = np.random.default_rng(1)
    gamma, beta, mean = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2, 4).astype(np.float32)
    bn_inits = [numpy_helper.from_array(a, n) for a, n in zip((gamma, beta, mean, var), "gbmv")]
    nodes = [
        conv_node("c1", "image", "c", "c1.w", "c1.b"),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn1", epsilon=0.01),
        helper.make_node("Relu", ["n"], ["r"], name="r1"),
        helper.make_node("MaxPool", ["r"], ["p"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["y"], name="flat"),
    ]
    inits = conv_params("c1", 3, 4) + bn_inits
    stack = load_model(save_graph(tmp_path, nodes, inits))
    assert [layer.name for layer in stack.layers] == ["conv1_1", "pool1"]
    w, b = (numpy_helper.to_array(t) for t in inits[:2])
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 0.01)
    np.testing.assert_allclose(stack.layers[0].weight, w * scale[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(stack.layers[0].bias, (b - mean) * scale + beta, rtol=1e-6, atol=1e-6)


def test_a_truncated_onnx_file_is_one_clear_line(tmp_path):
    path = export_onnx(tiny_vgg("A"), tmp_path / "m.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(TruncatedModel) as exc_info:
        load_model(cut)
    assert "cut.onnx" in str(exc_info.value) and "\n" not in str(exc_info.value)
