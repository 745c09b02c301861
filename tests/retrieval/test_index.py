"""The search index: exact ranks equal the old full-matrix ranking, file round trip, hostile files."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from chipq.retrieval import index as idx
from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, encode, save_descriptors
from chipq.retrieval.scoring import database_mask, evaluate, holidays_ground_truth, similarities

pytest.importorskip("faiss", reason="faiss is an optional part: pip install 'chipq[index]'")


def _dataset(kind, n=120, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"{100000 + 100 * (i // 4) + i % 4}.jpg" for i in range(n)]
    vectors = rng.random((n, dim)) ** 3
    vectors[7] = vectors[3]  # exact ties: same vector twice, and a zero vector
    vectors[11] = vectors[3]
    vectors[20] = 0
    return DescriptorSet(names, encode(vectors, kind), kind, dim, {"model": "test"})


def _reference_aps(dset, gt, exclude_queries):
    """The ranking chipq used before the index: a full score row, stable argsort."""
    names = {n: i for i, n in enumerate(dset.names)}
    in_db = database_mask(dset, gt, exclude_queries=exclude_queries)
    aps = []
    for query, positives in gt.items():
        row = names[query]
        score = similarities(dset.codes[[row]], dset.codes, dset.kind, dset.dim)[0]
        cand = np.flatnonzero(in_db)
        cand = cand[cand != row]
        order = np.argsort(-score[cand], kind="stable")
        rank_of = {int(cand[o]): r for r, o in enumerate(order)}
        ranks = sorted(rank_of[names[p]] for p in positives if names[p] in rank_of)
        total = sum(((1.0 if r == 0 else i / r) + (i + 1) / (r + 1)) / 2 for i, r in enumerate(ranks))
        aps.append(total / len(positives))
    return aps


@pytest.mark.parametrize("kind", list(DescriptorKind))
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("use_faiss", [True, False])
def test_ranks_through_the_index_equal_the_full_ranking(kind, exclude, use_faiss, monkeypatch):
    dset = _dataset(kind)
    gt, _ = holidays_ground_truth(dset.names)
    monkeypatch.setattr(idx, "have_faiss", lambda: use_faiss)
    got = [r.ap for r in evaluate(dset, gt, exclude_queries=exclude).results]
    assert got == pytest.approx(_reference_aps(dset, gt, exclude), abs=1e-12)


def test_tiny_blocks_change_nothing(monkeypatch):
    from chipq.retrieval import scoring

    dset = _dataset(DescriptorKind.FLOAT)
    gt, _ = holidays_ground_truth(dset.names)
    whole = [r.ap for r in evaluate(dset, gt).results]
    monkeypatch.setattr(scoring, "SCORE_CHUNK_BYTES", 64)
    assert [r.ap for r in evaluate(dset, gt).results] == whole


@pytest.mark.parametrize("kind", [DescriptorKind.FLOAT, DescriptorKind.BYTE])
def test_unit_vectors_in_row_blocks_are_the_whole_array_bits(kind, monkeypatch):
    codes = _dataset(kind, n=37).codes
    whole = codes.astype(np.float64)
    norms = np.linalg.norm(whole, axis=1, keepdims=True)
    expected = np.divide(whole, norms, out=np.zeros_like(whole), where=norms > 0).astype(np.float32)
    monkeypatch.setattr(idx, "UNIT_BLOCK_ROWS", 5)  # 37 rows: 7 full blocks and a short one
    got = idx.unit_float32(codes)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert not got[20].any()  # the zero vector stays zero


@pytest.mark.parametrize("kind", list(DescriptorKind))
def test_flat_search_finds_each_descriptor_first_and_round_trips(kind, tmp_path):
    dset = _dataset(kind, seed=2)
    path = tmp_path / "x.index"
    idx.save_index(path, idx.build_index(dset))
    loaded = idx.load_index(path)
    assert loaded.dset.names == dset.names and np.array_equal(loaded.dset.codes, dset.codes)
    scores, ids = loaded.search(dset.codes[:30], 5)
    unique = [i for i in range(30) if i not in (3, 7, 11, 20)]
    assert all(ids[i, 0] == i for i in unique)
    assert ids[7, 0] == 3 and ids[11, 0] == 3  # ties in database order
    assert np.all(np.diff(scores, axis=1) <= 1e-12)
    full = similarities(dset.codes[:30], dset.codes, kind, dset.dim)
    np.testing.assert_allclose(scores[:, 0], full.max(axis=1), atol=1e-5)


def test_ivf_round_trip_recall_and_nprobe(tmp_path):
    rng = np.random.default_rng(4)
    centres = rng.random((20, 32))
    vectors = np.abs(centres[rng.integers(0, 20, 2000)] + 0.05 * rng.standard_normal((2000, 32)))
    names = [f"d{i}.jpg" for i in range(2000)]
    dset = DescriptorSet(names, encode(vectors, DescriptorKind.FLOAT), DescriptorKind.FLOAT, 32, {})
    built = idx.build_index(dset, "ivf", nlist=20, nprobe=2)
    idx.save_index(tmp_path / "i", built)
    loaded = idx.load_index(tmp_path / "i")
    assert loaded.method == "ivf" and loaded.nlist == 20 and loaded.faiss_index().ntotal == 2000
    exact = idx.build_index(dset)
    q = dset.codes[:100]
    _, want = exact.search(q, 10)
    _, got = loaded.search(q, 10)
    _, got_all = loaded.search(q, 10, nprobe=20)  # every cell: exact
    assert idx.recall_at(got, want, 10) > 0.6
    assert idx.recall_at(got_all, want, 10) == 1.0
    with pytest.raises(idx.UsageError):
        idx.build_index(_dataset(DescriptorKind.BIT), "ivf")


def _rewrite(path, out, **changes):
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            name = info.filename[:-4]
            if name in changes:
                if changes[name] is None:
                    continue
                import io

                buffer = io.BytesIO()
                np.save(buffer, changes[name], allow_pickle=False)
                dst.writestr(info.filename, buffer.getvalue())
            else:
                dst.writestr(info, src.read(info))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"assign": np.full(2000, 99, np.int32)}, "cell number"),
        ({"assign": np.zeros(5, np.int32)}, "expected int32"),
        ({"centroids": np.zeros((20, 32), np.float64)}, "expected float32"),
        ({"centroids": None}, "members"),
        ({"index": np.array('{"version": 1, "method": "ivf", "nlist": 20, "nprobe": 99}')}, "nprobe"),
        ({"index": np.array('{"version": 2}')}, "index version"),
        ({"index": np.array("not json")}, "not JSON"),
    ],
)
def test_hostile_index_files_are_refused(tmp_path, changes, message):
    rng = np.random.default_rng(5)
    dset = DescriptorSet([f"d{i}" for i in range(2000)], encode(rng.random((2000, 32)), DescriptorKind.FLOAT), DescriptorKind.FLOAT, 32, {})
    idx.save_index(tmp_path / "good", idx.build_index(dset, "ivf", nlist=20, nprobe=2))
    _rewrite(tmp_path / "good", tmp_path / "bad", **changes)
    with pytest.raises(idx.ChipqError, match=message):
        idx.load_index(tmp_path / "bad")


def test_a_descriptor_file_is_not_an_index_but_is_searchable(tmp_path):
    dset = _dataset(DescriptorKind.BYTE)
    save_descriptors(tmp_path / "d.npz", dset)
    with pytest.raises(idx.IndexError_, match="chipq index"):
        idx.load_index(tmp_path / "d.npz")
    assert idx.load_searchable(tmp_path / "d.npz").method == "flat"
    (tmp_path / "junk").write_bytes(b"\x00" * 100)
    with pytest.raises(idx.ChipqError):
        idx.load_index(tmp_path / "junk")
