"""ONNX external data is checked to stay in the model's folder before any of it is read."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from chipq.importers import load_model
from chipq.importers.errors import UnsafeExternalData


def write_model(folder: pathlib.Path, location: str = "weights.bin") -> pathlib.Path:
    """conv1_1 (3->4) + Relu with its initializers in the external file `location`.

    An unused int64 tensor (as a classifier's Reshape would have) is stored there too.
    """
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "tail_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], name="c1", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),  # fmt: skip
        helper.make_node("Relu", ["c"], ["y"], name="r1"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)  # fmt: skip
    return path


def set_external(path: pathlib.Path, **entries: str) -> None:
    """Rewrite the external-data entries (location, offset, length) of every initializer in place."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key in entries:
                entry.value = entries[entry.key]
    onnx.save_model(model, str(path))


@pytest.fixture
def opened(monkeypatch):
    """Every path the importer opens through pathlib (external data is read that way)."""
    seen: list[pathlib.Path] = []
    real_open = pathlib.Path.open

    def spy(self, *args, **kwargs):
        seen.append(self.resolve())
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", spy)
    return seen


def test_data_in_a_subfolder_loads(tmp_path):
    stack = load_model(write_model(tmp_path / "model", "data/weights.bin"))
    assert stack.conv_layers()[0].weight.shape == (4, 3, 3, 3)


def test_an_absolute_location_is_refused(tmp_path):
    path = write_model(tmp_path / "model")
    set_external(path, location=str(tmp_path / "model" / "weights.bin"))  # exists, but absolute
    with pytest.raises(UnsafeExternalData, match="is absolute"):
        load_model(path)


def test_a_dotdot_location_is_refused(tmp_path):
    path = write_model(tmp_path / "model")
    shutil.copy(tmp_path / "model" / "weights.bin", tmp_path / "outside.bin")
    set_external(path, location="../outside.bin")
    with pytest.raises(UnsafeExternalData, match=r"climbs out of the model's folder"):
        load_model(path)


def test_a_symlink_out_of_the_folder_is_refused_before_reading(tmp_path, opened):
    path = write_model(tmp_path / "model")
    outside = tmp_path / "secret.bin"
    shutil.move(tmp_path / "model" / "weights.bin", outside)
    (tmp_path / "model" / "weights.bin").symlink_to(outside)
    with pytest.raises(UnsafeExternalData, match="outside the model's folder"):
        load_model(path)
    assert outside.resolve() not in opened


def test_a_symlink_inside_the_folder_is_fine(tmp_path):
    path = write_model(tmp_path / "model", "real.bin")
    (tmp_path / "model" / "alias.bin").symlink_to(tmp_path / "model" / "real.bin")
    set_external(path, location="alias.bin")
    assert load_model(path).conv_layers()[0].out_channels == 4


@pytest.mark.parametrize(
    "entries, why",
    [
        ({"location": "missing.bin"}, "no such file"),
        ({"offset": "1000000"}, "bytes 1000000"),
        ({"length": "4"}, "needs 432 bytes"),  # the 4x3x3x3 float32 weight is 432 bytes
    ],
)
def test_bad_locations_and_ranges_are_refused(tmp_path, entries, why):
    path = write_model(tmp_path / "model")
    set_external(path, **entries)
    with pytest.raises(UnsafeExternalData, match=why) as exc_info:
        load_model(path)
    assert "initializer 'w'" in str(exc_info.value)  # the first one checked
