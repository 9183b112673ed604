"""Meta-path tables read by rows (issue 33, item 2): :class:`ShardedNeighbours` stands in for a
table's CSR in MMSC and reads padded rows on demand.  Here the rows sit in a plain tensor (what a
``DistTensor`` answers to ``[ids]``), under a shuffled id mapping as DistDGL's partitions make
it, so the reads are checked against the whole table without servers (the loopback and standalone
jobs are in tests/test_dist_train.py)."""
import types

import pytest
import torch

from conftest import assert_same_training_signal
from mmsc_dgl.config import ModelConfig
from mmsc_dgl.distributed.sharded_metapaths import DroppedRows, ShardedNeighbours, padded_rows
from mmsc_dgl.models.mmsc import MMSC
from mmsc_dgl.ops import CSR

N, K = 60, 5
RELATIONS = ("substitute", "complement")


def _table(seed: int):
    """A walk-like table: at most K sorted neighbours per row, some rows empty; and its pairs."""
    g = torch.Generator().manual_seed(seed)
    rows, cols, share = [], [], []
    for i in range(N):
        d = int(torch.randint(0, K + 1, (1,), generator=g)) if i % 7 else 0
        nbr = torch.randperm(N, generator=g)[:d]
        rows.append(torch.full((d,), i))
        cols.append(nbr)
        share.append(torch.rand(d, generator=g))
    rows, cols, share = torch.cat(rows), torch.cat(cols), torch.cat(share)
    order = torch.argsort(rows * N + cols)
    rows, cols, share = rows[order], cols[order], share[order]
    whole = CSR.from_edges(rows, cols, N)
    return whole, rows, cols, share


def _sharded(rows, cols, share, seed: int = 0):
    """The padded rows stored under DistDGL-like ids (a permutation of the items)."""
    orig = torch.randperm(N, generator=torch.Generator().manual_seed(100 + seed))  # DistDGL id -> dataset id
    new_ids = torch.empty_like(orig)
    new_ids[orig] = torch.arange(N)
    neighbours, shares = padded_rows(rows, cols, share, N, K)  # in dataset ids
    stored = torch.empty_like(neighbours)
    stored[new_ids] = neighbours  # row new_ids[i] holds item i
    return ShardedNeighbours(stored, new_ids, K), shares


def test_padded_rows_keep_each_rows_sorted_neighbours_and_shares():
    whole, rows, cols, share = _table(0)
    neighbours, shares = padded_rows(rows.flip(0), cols.flip(0), share.flip(0), N, K)  # any input order
    for i in range(N):
        lo, hi = int(whole.indptr[i]), int(whole.indptr[i + 1])
        assert neighbours[i, : hi - lo].tolist() == whole.indices[lo:hi].tolist()
        assert (neighbours[i, hi - lo:] == -1).all() and (shares[i, hi - lo:] == 0).all()
        assert torch.equal(shares[i, : hi - lo], share[lo:hi])
    with pytest.raises(ValueError, match="more than the width"):
        padded_rows(rows, cols, share, N, 2)


def test_rows_read_on_demand_equal_the_whole_tables_rows():
    whole, rows, cols, share = _table(1)
    sharded, _ = _sharded(rows, cols, share)
    nodes = torch.tensor([5, 0, 59, 7, 5, 31])  # repeats and empty rows included
    got, want = sharded.select_rows(nodes), whole.select_rows(nodes)
    assert torch.equal(got.indptr, want.indptr) and torch.equal(got.indices, want.indices)
    assert got.num_src == want.num_src == N
    nbr, mask = sharded.padded(nodes)
    want_nbr, want_mask = whole.padded(nodes, width=K)
    assert torch.equal(mask, want_mask) and torch.equal(nbr, want_nbr)
    assert sharded.max_degree() == K and sharded.to("cpu") is sharded and sharded.drop_edges(0.0) is sharded


def test_a_dropout_view_drops_pulled_edges_only_at_its_rate():
    whole, rows, cols, share = _table(2)
    sharded, _ = _sharded(rows, cols, share)
    nodes = torch.arange(N).repeat(40)
    view = sharded.drop_edges(0.3, torch.Generator().manual_seed(0))
    assert isinstance(view, DroppedRows)
    dropped, full = view.select_rows(nodes), whole.select_rows(nodes)
    assert dropped.num_edges == pytest.approx(0.7 * full.num_edges, rel=0.05)
    for i in range(0, nodes.numel(), 97):  # each row keeps a subset of its neighbours, in order
        kept = dropped.indices[dropped.indptr[i]: dropped.indptr[i + 1]].tolist()
        have = full.indices[full.indptr[i]: full.indptr[i + 1]].tolist()
        assert set(kept) <= set(have) and kept == sorted(kept)
    nbr, mask = view.padded(nodes)
    assert mask.sum() == pytest.approx(0.7 * full.num_edges, rel=0.05)


def test_mmsc_on_rows_read_on_demand_is_mmsc_on_the_whole_tables():
    """The same weights give the same scoring rows and the same loss with either table."""
    tables, sharded = {}, {}
    for seed, name in enumerate(("s", "c", "s-c")):
        whole, rows, cols, share = _table(10 + seed)
        tables[name] = whole
        sharded[name], _ = _sharded(rows, cols, share, seed)
    g = torch.Generator().manual_seed(3)
    edges = {r: types.SimpleNamespace(src=torch.randint(0, N, (120,), generator=g),
                                      dst=torch.randint(0, N, (120,), generator=g)) for r in RELATIONS}
    config = ModelConfig(hidden=16, heads=2, graph_branch=0, ssl_weight=0.0)
    torch.manual_seed(0)
    one = MMSC(N, tables, config, graph_edges=edges).eval()
    torch.manual_seed(0)
    other = MMSC(N, sharded, config, graph_edges=edges).eval()
    other.load_state_dict(one.state_dict())
    nodes = torch.tensor([3, 9, 0, 41, 58, 14])
    for r in RELATIONS:
        assert torch.allclose(one(nodes, r), other(nodes, r), atol=1e-6)
        assert torch.allclose(one.embed(r), other.embed(r), atol=1e-6)
    batch = {r: (torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), torch.tensor([[7, 8], [9, 10], [11, 12]]))
             for r in RELATIONS}
    loss_one, loss_other = one.loss(batch)["total"], other.loss(batch)["total"]
    assert_same_training_signal(one, other, loss_one, loss_other)
