"""Descriptor codes, the .npz descriptor file read as hostile input, and checkpointed runs."""

from __future__ import annotations

import doctest
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from chipq.retrieval import descriptors
from chipq.retrieval.descriptors import (
    BadDescriptorField,
    DescriptorFileUnreadable,
    DescriptorKind,
    DescriptorLimitExceeded,
    DescriptorSet,
    DescriptorStore,
    NotADescriptorFile,
    PartialMismatch,
    UnsupportedDescriptorVersion,
    encode,
    load_descriptors,
    partial_path,
    save_descriptors,
)

KINDS = list(DescriptorKind)
unit_vectors = hnp.arrays(np.float64, st.integers(1, 64), elements=st.floats(0, 1, allow_nan=False))


def test_doctests():
    assert doctest.testmod(descriptors).failed == 0


@given(unit_vectors)
def test_byte_code(v):
    """The largest element maps to 255 and every element is within half a step of v·255/max(v)."""
    q = encode(v, DescriptorKind.BYTE)
    assert q.dtype == np.uint8 and q.shape == v.shape
    if v.max() > 0:
        assert q.max() == 255
        assert np.all(np.abs(q - v / v.max() * 255) <= 0.5 + 1e-9)
    else:
        assert not q.any()


@given(unit_vectors)
def test_bit_code(v):
    """Bit k is v[k] > median(v), MSB first, unused bits zero; at most half the bits are set."""
    packed = encode(v, DescriptorKind.BIT)
    assert packed.dtype == np.uint8 and packed.shape == ((len(v) + 7) // 8,)
    bits = np.unpackbits(packed)
    np.testing.assert_array_equal(bits[: len(v)], v > np.median(v))
    assert not bits[len(v) :].any()
    assert bits.sum() <= len(v) // 2


def test_byte_code_refuses_negative_values():
    with pytest.raises(ValueError, match="non-negative"):
        encode(np.array([0.5, -0.1]), DescriptorKind.BYTE)


def _set(kind: DescriptorKind, n: int = 3, dim: int = 20, seed: int = 0) -> DescriptorSet:
    rng = np.random.default_rng(seed)
    codes = encode(rng.random((n, dim)), kind)
    names = [f"dir/img{i}.jpg" for i in range(n)]
    return DescriptorSet(names, codes, kind, dim, {"model": "m", "rnip": None})


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_and_same_bytes(tmp_path, kind):
    dset = _set(kind)
    save_descriptors(tmp_path / "a.npz", dset)
    save_descriptors(tmp_path / "b.npz", dset)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load_descriptors(tmp_path / "a.npz")
    assert back.names == dset.names and back.kind is kind and back.dim == 20
    assert back.metadata == dset.metadata
    assert back.codes.dtype == dset.codes.dtype
    np.testing.assert_array_equal(back.codes, dset.codes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no temp file left


def test_empty_set_round_trips(tmp_path):
    dset = DescriptorSet([], np.zeros((0, 8), np.float32), DescriptorKind.FLOAT, 8)
    save_descriptors(tmp_path / "e.npz", dset)
    assert load_descriptors(tmp_path / "e.npz").names == []


# --- hostile files ---------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def _npy_header_only(descr: str, shape: tuple) -> bytes:
    """A .npy v1.0 header announcing `shape` of `descr`, followed by no data at all."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _members(dset: DescriptorSet | None = None) -> dict[str, bytes]:
    dset = dset or _set(DescriptorKind.FLOAT)
    return {
        "format_version": _npy(np.array(1, np.int64)),
        "kind": _npy(np.array(dset.kind.value)),
        "dim": _npy(np.array(dset.dim, np.int64)),
        "names": _npy(np.array(dset.names)),
        "descriptors": _npy(dset.codes),
        "metadata": _npy(np.array('{"model": "m"}')),
    }


def _write(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)


def _refused(tmp_path, members, error, match):
    path = tmp_path / "bad.npz"
    _write(path, members)
    with pytest.raises(error, match=match):
        load_descriptors(path)


def test_valid_hand_built_file_loads(tmp_path):
    _write(tmp_path / "ok.npz", _members())  # the helpers below only break what they say
    assert len(load_descriptors(tmp_path / "ok.npz").names) == 3


def test_not_a_zip_or_missing(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"\x93NUMPY not a zip")
    with pytest.raises(NotADescriptorFile, match="not an .npz"):
        load_descriptors(tmp_path / "x.npz")
    with pytest.raises(DescriptorFileUnreadable, match="no such file"):
        load_descriptors(tmp_path / "nope.npz")


def test_member_set_must_be_exact(tmp_path):
    extra = _members() | {"evil": _npy(np.array(1))}
    _refused(tmp_path, extra, NotADescriptorFile, "evil.npy")
    missing = _members()
    del missing["metadata"]
    _refused(tmp_path, missing, NotADescriptorFile, "expected")


def test_object_arrays_are_never_unpickled(tmp_path, monkeypatch):
    # An object-dtype member (a pickle) is refused from its header; pickle is never touched.
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    members = _members() | {"names": _npy(np.array(["a", "b", "c"], dtype=object))}
    _refused(tmp_path, members, BadDescriptorField, "names: dtype object")


def test_lying_shape_is_refused_before_reading(tmp_path):
    # The header claims 10^9 x 512 floats (2 TB); there is no data, and nothing may be allocated.
    members = _members() | {"descriptors": _npy_header_only("<f4", (10**9, 512))}
    _refused(tmp_path, members, DescriptorLimitExceeded, "descriptors: shape")
    long_names = _members() | {"names": _npy_header_only("<U100000", (3,))}
    _refused(tmp_path, long_names, DescriptorLimitExceeded, "100000 characters")
    # Within the caps, but the member is shorter than what its header announces: refused from
    # the zip directory's size, before the read.
    hollow = _members() | {"descriptors": _npy_header_only("<f4", (100_000, 512))}
    _refused(tmp_path, hollow, BadDescriptorField, "member holds fewer")


def test_truncated_member_data(tmp_path):
    members = _members()
    members["descriptors"] = members["descriptors"][:-7]  # the header says 3x20 float32, 7 bytes short
    _refused(tmp_path, members, BadDescriptorField, "data bytes")


def test_version_and_kind(tmp_path):
    v2 = _members() | {"format_version": _npy(np.array(2))}
    _refused(tmp_path, v2, UnsupportedDescriptorVersion, "format_version 2")
    _refused(tmp_path, _members() | {"kind": _npy(np.array("half"))}, BadDescriptorField, "kind 'half'")


def test_fields_must_agree(tmp_path):
    dim21 = _members() | {"dim": _npy(np.array(21))}
    _refused(tmp_path, dim21, BadDescriptorField, r"expected float32 \(3, 21\)")
    _refused(tmp_path, _members() | {"names": _npy(np.array(["a", "b"]))}, BadDescriptorField, "for 2 float")
    as_f64 = _members() | {"descriptors": _npy(np.zeros((3, 20)))}
    _refused(tmp_path, as_f64, BadDescriptorField, "float64")
    nan = np.zeros((3, 20), np.float32)
    nan[1, 2] = np.nan
    _refused(tmp_path, _members() | {"descriptors": _npy(nan)}, BadDescriptorField, "NaN")
    _refused(tmp_path, _members() | {"metadata": _npy(np.array("{oops"))}, BadDescriptorField, "not JSON")
    _refused(tmp_path, _members() | {"metadata": _npy(np.array("[1]"))}, BadDescriptorField, "JSON object")


def test_names_checked(tmp_path):
    _refused(tmp_path, _members() | {"names": _npy(np.array(["a", "b", "a"]))}, BadDescriptorField, "twice")
    escape_code = _members() | {"names": _npy(np.array(["a", "b\x1b[2J", "c"]))}
    _refused(tmp_path, escape_code, BadDescriptorField, "control")
    _refused(tmp_path, _members() | {"names": _npy(np.array(["a", "", "c"]))}, BadDescriptorField, "empty")


def test_bit_padding_must_be_zero(tmp_path):
    dset = _set(DescriptorKind.BIT, dim=20)  # 20 bits: the last byte uses 4, the low 4 must be 0
    codes = dset.codes.copy()
    codes[0, -1] |= 0x01
    members = _members(dset) | {"descriptors": _npy(codes)}
    _refused(tmp_path, members, BadDescriptorField, "unused bits")


# --- checkpointed runs -----------------------------------------------------------------------


def test_partial_path():
    assert partial_path(Path("out/desc.npz")).name == "desc.partial.npz"
    assert partial_path(Path("out/desc")).name == "desc.partial.npz"


def _vectors(names):
    return {name: np.random.default_rng(i).random(16) for i, name in enumerate(names)}


@pytest.mark.parametrize("kind", KINDS)
def test_resumed_run_gives_the_same_file(tmp_path, kind):
    names = [f"{i:03d}.jpg" for i in range(10)]
    vectors = _vectors(names)
    meta = {"model": "m", "size": (224, 224)}

    whole = DescriptorStore(tmp_path / "whole.npz", names, kind=kind, metadata=meta, checkpoint_every=3)
    for name in names:
        whole.add(name, vectors[name])
    whole.finish()

    out = tmp_path / "resumed.npz"
    first = DescriptorStore(out, names, kind=kind, metadata=meta, checkpoint_every=3)
    for name in names[:7]:  # interrupted after 7: the checkpoint holds 6
        first.add(name, vectors[name])
    del first
    second = DescriptorStore(out, names, kind=kind, metadata=meta, checkpoint_every=3)
    assert second.resumed == 6 and second.pending == names[6:]
    for name in second.pending:
        second.add(name, vectors[name])
    second.finish()

    assert out.read_bytes() == (tmp_path / "whole.npz").read_bytes()
    assert not partial_path(out).exists()


def test_checkpoint_of_another_run_is_refused(tmp_path):
    names = ["a.jpg", "b.jpg"]
    store = DescriptorStore(tmp_path / "d.npz", names, kind="float", metadata={"rnip": 5}, checkpoint_every=1)
    store.add("a.jpg", np.ones(4))
    with pytest.raises(PartialMismatch, match="different run"):
        DescriptorStore(tmp_path / "d.npz", names, kind="float", metadata={"rnip": 9})
    with pytest.raises(PartialMismatch, match="different run"):
        DescriptorStore(tmp_path / "d.npz", names, kind="bit", metadata={"rnip": 5})
    with pytest.raises(PartialMismatch, match="not in this run"):
        DescriptorStore(tmp_path / "d.npz", ["b.jpg"], kind="float", metadata={"rnip": 5})


def test_store_rejects_wrong_input(tmp_path):
    store = DescriptorStore(tmp_path / "d.npz", ["a.jpg"], kind="byte", metadata={})
    with pytest.raises(ValueError, match="not one of"):
        store.add("z.jpg", np.ones(4))
    with pytest.raises(ValueError, match="duplicate|unique"):
        DescriptorStore(tmp_path / "e.npz", ["a", "a"], kind="byte", metadata={})
