import numpy as np
import pyarrow as pa
import pytest

from mmsc_dgl.config import SplitConfig
from mmsc_dgl.data.edges import canonical_edges
from mmsc_dgl.data.report import SkipReport
from mmsc_dgl.data.splits import Splits, make_splits
from mmsc_dgl.data.negatives import NegativeSampler


def _random_edges(n=400, m=3000, seed=0, symmetric=True):
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(("substitute", "complement")):
        src = rng.integers(0, n, m)
        dst = (src + rng.integers(1, 40, m)) % n  # local structure, no self-loops
        out[name] = canonical_edges(src, dst, n, name, SkipReport(), symmetric=symmetric)
    return out


def _pairs(e):
    return set(zip(e.src.tolist(), e.dst.tolist()))


@pytest.mark.parametrize("symmetric", [True, False])
def test_protocol_invariants(symmetric):
    n = 400
    edges = _random_edges(n, symmetric=symmetric)
    splits = make_splits(edges, n, SplitConfig(seed=3, num_negatives=50, cold_fraction=0.1))
    cold = set(splits.cold_items.tolist())
    assert len(cold) == round(0.1 * n)
    for name, rel in edges.items():
        train, val, test = _pairs(splits.train[name]), _pairs(splits.val[name]), _pairs(splits.test[name])
        everything = _pairs(rel)
        assert train | val | test <= everything
        held = val | test
        # No held-out pair is trained on, in either direction.
        assert not (train & (held | {(d, s) for s, d in held}))
        # A validation edge is never a test edge or its reverse.
        assert not (val & (test | {(d, s) for s, d in test}))
        # Nothing that touches a cold item is in train/val/test; cold edges start at cold items.
        for s, d in train | held:
            assert s not in cold and d not in cold
        assert all(s in cold for s, _ in _pairs(splits.cold[name]))
        assert _pairs(splits.cold[name]) == {(s, d) for s, d in everything if s in cold}
        # One test edge per item with enough (warm) edges, at most one validation edge.
        warm = rel.select(~np.isin(rel.src, list(cold)) & ~np.isin(rel.dst, list(cold)))
        deg = warm.degrees(n)
        assert sorted(splits.test[name].src.tolist()) == np.flatnonzero(deg >= 2).tolist()
        assert len(set(splits.val[name].src.tolist())) == len(splits.val[name])


def test_same_seed_same_split_bit_for_bit(tmp_path):
    edges = _random_edges()
    a = make_splits(edges, 400, SplitConfig(seed=5, num_negatives=20))
    b = make_splits(edges, 400, SplitConfig(seed=5, num_negatives=20))
    c = make_splits(edges, 400, SplitConfig(seed=6, num_negatives=20))
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    for f in ("train", "val", "test", "cold", "cold_items"):
        assert (tmp_path / "a" / f"{f}.parquet").read_bytes() == (tmp_path / "b" / f"{f}.parquet").read_bytes()
    assert _pairs(a.test["substitute"]) != _pairs(c.test["substitute"])
    loaded = Splits.load(tmp_path / "a")
    for split in ("train", "val", "test", "cold"):
        for name in ("substitute", "complement"):
            assert np.array_equal(loaded.edges(split)[name].src, a.edges(split)[name].src)
            assert np.array_equal(loaded.edges(split)[name].dst, a.edges(split)[name].dst)
    assert loaded.num_negatives == 20 and loaded.config == a.config


def test_cold_mask_from_catalog_and_pairs_leave_training():
    edges = _random_edges()
    mask = np.zeros(400, bool)
    mask[[1, 2, 3]] = True
    s, d = int(edges["complement"].src[100]), int(edges["complement"].dst[100])
    pairs = pa.table({"relation": ["complement", "complement"], "src": [s, 5], "dst": [d, 6],
                      "label": pa.array([1, 0], pa.int8())})
    splits = make_splits(edges, 400, SplitConfig(num_negatives=10), cold_mask=mask, pairs=pairs)
    assert splits.cold_items.tolist() == [1, 2, 3]
    assert "is_cold_start" in splits.stats["cold_items"]["source"]
    train = _pairs(splits.train["complement"])
    assert (s, d) not in train and (d, s) not in train


def test_negatives_are_valid_distinct_and_batch_independent():
    n = 400
    edges = _random_edges(n)
    splits = make_splits(edges, n, SplitConfig(seed=1, num_negatives=100))
    sampler = splits.negative_sampler(edges)
    test = splits.test["substitute"]
    q = np.arange(len(test))
    neg = sampler.sample("substitute", "test", q, test.src)
    assert neg.shape == (len(test), 100) and neg.dtype == np.int64
    everything = _pairs(edges["substitute"])
    for row, u in zip(neg, test.src):
        assert len(set(row.tolist())) == 100
        assert int(u) not in row
        assert not any((int(u), int(v)) in everything or (int(v), int(u)) in everything for v in row)
    # Any subset, in any order, gets the same rows.
    idx = np.array([7, 3, 50])
    assert np.array_equal(sampler.sample("substitute", "test", q[idx], test.src[idx]), neg[idx])
    # Another split or relation gets other negatives.
    assert not np.array_equal(sampler.sample("substitute", "val", q[:5], test.src[:5]), neg[:5])
    again = splits.negative_sampler(edges).sample("substitute", "test", q, test.src)
    assert np.array_equal(again, neg)
    # Asked again (validation, every epoch): the remembered answer, which a caller cannot spoil.
    first = sampler.sample("substitute", "test", q, test.src)
    first[:] = -1
    assert np.array_equal(sampler.sample("substitute", "test", q, test.src), neg)


def test_negatives_capped_when_catalog_is_small():
    # Item 0 is related to 8 of 10 items: at most 1 negative is left for it.
    src = np.array([0] * 8 + [5, 6])
    dst = np.array([1, 2, 3, 4, 5, 6, 7, 8, 6, 9])
    edges = {"substitute": canonical_edges(src, dst, 10, "substitute", SkipReport()),
             "complement": canonical_edges(np.array([1, 2]), np.array([2, 3]), 10, "complement", SkipReport())}
    splits = make_splits(edges, 10, SplitConfig(num_negatives=1000, cold_fraction=0.0))
    assert splits.num_negatives == 1
    assert splits.stats["negatives"] == {"requested": 1000, "used": 1}
    sampler = splits.negative_sampler(edges)
    row0 = np.flatnonzero(splits.test["substitute"].src == 0)
    assert sampler.sample("substitute", "test", row0, np.array([0])).tolist() == [[9]]
    with pytest.raises(ValueError, match="fewer than num_negatives"):
        NegativeSampler(10, {"substitute": edges["substitute"].csr(10)}, 0, 2).sample(
            "substitute", "test", np.array([0]), np.array([0]))


def _reference_negatives(sampler, relation, split, query, src):
    """The documented rule, one row and one slot at a time: slot j's draw ``attempt`` is
    redrawn while it is the query item, a true neighbour, or a value an earlier slot of the
    row holds; every round re-checks the whole row and redraws only what is bad."""
    k, n = sampler.num_negatives, sampler.num_items
    codes = set(sampler._codes[relation].tolist())
    stream = sampler._stream(relation, split)
    out = []
    for q, u in zip(query.tolist(), src.tolist()):
        attempt = [0] * k
        row = sampler._draw(stream, np.full(k, q), np.arange(k), np.zeros(k, dtype=np.int64)).tolist()
        todo = set(range(k))
        while True:
            bad = {j for j in todo if row[j] == u or u * n + row[j] in codes}
            first = {}
            for j, v in enumerate(row):
                if v in first:
                    bad.add(j)
                else:
                    first[v] = j
            if not bad:
                break
            for j in bad:
                attempt[j] += 1
                row[j] = int(sampler._draw(stream, np.array([q]), np.array([j]), np.array([attempt[j]]))[0])
            todo = bad
        out.append(row)
    return np.array(out, dtype=np.int64).reshape(len(query), k)


@pytest.mark.parametrize("table_cells", [None, 0])
def test_negatives_match_the_slow_rule_with_either_repeat_check(table_cells, monkeypatch):
    """Half the catalog per row, so draws repeat for many rounds: the row-by-item table check
    (default) and the whole-row sort (forced with table_cells=0) both give the rule's rows."""
    from mmsc_dgl.data import negatives
    if table_cells is not None:
        monkeypatch.setattr(negatives, "REPEAT_TABLE_CELLS", table_cells)
    n = 120
    edges = _random_edges(n, m=400, seed=3)
    splits = make_splits(edges, n, SplitConfig(seed=2, num_negatives=55))
    sampler = splits.negative_sampler(edges)
    test = splits.test["complement"]
    q = np.arange(min(len(test), 40))
    got = sampler.sample("complement", "test", q, test.src[q])
    assert got.shape == (len(q), 55)
    np.testing.assert_array_equal(got, _reference_negatives(sampler, "complement", "test", q, test.src[q]))
