"""TorchScript archives are read as data: the same tensors torch.jit.load gives, and none of their code run."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from helpers import save_script_looping_on_load, tiny_vgg
from modelcraft import image_batch
from torch import nn

from chipq.importers import load_model
from chipq.importers.errors import TruncatedModel, UnsafePickle, UnsupportedLayout
from chipq.importers.torchscript import read_script_archive

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still in use


@pytest.mark.parametrize("how", ["script", "trace"])
def test_the_tensors_are_torch_jit_loads_bit_for_bit(tmp_path, how):
    model = tiny_vgg("D", batch_norm=True, classifier=True, bn_eps=1e-3)
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, image_batch(), check_trace=False)
    scripted.save(str(tmp_path / "ts.pt"))
    state, eps = read_script_archive(tmp_path / "ts.pt")
    want = torch.jit.load(str(tmp_path / "ts.pt")).state_dict()  # trusted here: our own file
    assert set(state) == set(want)
    for key, tensor in want.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key
    batch_norms = [i for i, m in enumerate(model.features) if isinstance(m, nn.BatchNorm2d)]
    assert eps == {i: pytest.approx(1e-3) for i in batch_norms}


def test_a_module_with_its_own_setstate_is_refused_without_running_it(tmp_path):
    save_script_looping_on_load(tmp_path / "loops.pt")
    with pytest.raises(UnsupportedLayout, match="__setstate__.*never does"):
        load_model(tmp_path / "loops.pt")  # returns at once: the loop is never entered


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy the archive `src` to `dst` with record contents changed by ``change(name, data)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info.filename)))


@pytest.fixture
def scripted(tmp_path) -> Path:
    path = tmp_path / "ok.pt"
    torch.jit.script(tiny_vgg("A", classifier=True)).save(str(path))
    return path


def test_a_global_outside_the_whitelist_is_refused(scripted, tmp_path):
    # data.pkl asks for os.system instead of collections.OrderedDict: refused, never called
    evil = tmp_path / "evil.pt"
    _rewrite(scripted, evil, lambda n, d: d.replace(b"ccollections\nOrderedDict\n", b"cos\nsystem\n") if n.endswith("data.pkl") else d)
    with pytest.raises(UnsafePickle, match="os.system"):
        load_model(evil)


def test_a_storage_shorter_than_declared_is_refused(scripted, tmp_path):
    cut = tmp_path / "cut.pt"
    _rewrite(scripted, cut, lambda n, d: d[:-4] if n.endswith("/data/0") else d)
    with pytest.raises(TruncatedModel, match="data/0"):
        load_model(cut)


def test_a_missing_storage_is_refused(scripted, tmp_path):
    gone = tmp_path / "gone.pt"
    with zipfile.ZipFile(scripted) as zin, zipfile.ZipFile(gone, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/data/0"):
                zout.writestr(info.filename, zin.read(info.filename))
    with pytest.raises(TruncatedModel, match="missing"):
        load_model(gone)


def test_a_tensor_that_repeats_its_storage_is_refused(tmp_path):
    """A stride of 0 would make one stored float a tensor of any size: 2^34 elements here."""
    import numpy as np

    from chipq.importers.torchscript import _ArchiveUnpickler

    unpickler = _ArchiveUnpickler(b"", None, "x/", tmp_path / "m.pt")
    with pytest.raises(TruncatedModel, match="more elements than its storage"):
        unpickler._rebuild_tensor(np.zeros(1, np.float32), 0, (1 << 34,), (0,))
