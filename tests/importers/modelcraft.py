"""Files and inputs of tiny torchvision-layout VGGs (`helpers.tiny_vgg`), for the importer tests.

The models' channels are divided by 16 (VGG-16: 4..32 channels), so every model is built, saved
and exported in milliseconds while keeping torchvision's ``features.N`` indices.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

INPUT_HW = (32, 32)  # five pools leave 1x1


def image_batch(n: int = 2, hw: tuple[int, int] = INPUT_HW, seed: int = 0) -> torch.Tensor:
    """A normalised-looking float input (N, 3, H, W)."""
    return torch.randn(n, 3, *hw, generator=torch.Generator().manual_seed(seed))


def export_onnx(
    model: nn.Module, path: Path, *, fold_bn: bool = True, initializers_as_inputs: bool = False
) -> Path:
    """torch.onnx.export with the TorchScript exporter; `fold_bn=False` keeps BatchNormalization nodes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated; it is what users have
        torch.onnx.export(
            model,
            (image_batch(1),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}},
            do_constant_folding=fold_bn,
            keep_initializers_as_inputs=initializers_as_inputs,
        )
    return path


def with_external_data(src: Path, dst: Path, location: str = "weights.bin") -> Path:
    """`src` re-saved as `dst` with every initializer in one external file next to it."""
    model = onnx.load(str(src))
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)  # fmt: skip
    return dst


def last_relu_output(model: onnx.ModelProto) -> str:
    """The output tensor of the last Relu before the first Flatten/GlobalAveragePool: conv5_3 for VGG-16."""
    nodes = list(model.graph.node)
    tail = next(i for i, node in enumerate(nodes) if node.op_type in ("GlobalAveragePool", "Flatten"))
    return [node.output[0] for node in nodes[:tail] if node.op_type == "Relu"][-1]


def run_onnx_tap(path: Path, tensor: str, x: np.ndarray) -> np.ndarray:
    """Run the ONNX file in onnxruntime and return the intermediate `tensor`.

    The model is re-saved next to `path` (same folder, so external data still resolves) with
    `tensor` added to the graph outputs.
    """
    import onnxruntime as ort

    model = onnx.load(str(path), load_external_data=False)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    probe = path.with_name(path.stem + ".probe.onnx")
    onnx.save_model(model, str(probe))
    session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    return session.run([tensor], {session.get_inputs()[0].name: x})[0]
