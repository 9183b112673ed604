"""Path evidence counted from neighbour lists fetched per call (issue 33, item 3):
:class:`FetchedPathCounter` stands in for the whole :class:`PathCounter` in MMSC's path evidence
and counts over the neighbourhood of a call's items.  Here the padded rows sit in plain tensors
(what a ``DistTensor`` answers to ``[ids]``) under a shuffled id mapping, as DistDGL's partitions
make it, so every count is checked against the whole graphs without servers (the standalone job
is in tests/test_dist_train.py)."""
import copy
import types
from unittest import mock

import pytest
import torch

dgl = pytest.importorskip("dgl")

from conftest import assert_same_training_signal
from mmsc_dgl.config import ModelConfig
from mmsc_dgl.distributed import sharded as sharded_module
from mmsc_dgl.distributed.sharded_evidence import FetchedPathCounter, padded_neighbours, shard_path_evidence
from mmsc_dgl.models.mmsc import MMSC
from mmsc_dgl.nn.path_evidence import SIMILAR, PathEvidence
from mmsc_dgl.ops import CSR
from mmsc_dgl.ops.paths import adamic_adar_counter

N = 80
RELATIONS = ("substitute", "complement")


def _edges(seed: int, count: int = 200):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for r in RELATIONS:  # a hub (item 0) for skewed degrees, and items without edges (70..79)
        src = torch.cat([torch.randint(0, 70, (count,), generator=g), torch.zeros(20, dtype=torch.int64)])
        dst = torch.cat([torch.randint(0, 70, (count,), generator=g), torch.arange(1, 21)])
        out[r] = types.SimpleNamespace(src=src, dst=dst)
    return out


def _id_map(seed: int):
    orig = torch.randperm(N, generator=torch.Generator().manual_seed(100 + seed))  # DistDGL id -> dataset id
    new_ids = torch.empty_like(orig)
    new_ids[orig] = torch.arange(N)
    return orig, new_ids


def _stored(edges, new_ids):
    """The graph a partition's servers hold (each relation reversed), under DistDGL-like ids, as
    one local DGLGraph: what :class:`GraphRows` samples without servers."""
    train = dgl.heterograph({("item", r, "item"): (new_ids[e.src], new_ids[e.dst]) for r, e in edges.items()},
                            num_nodes_dict={"item": N}, idtype=torch.int64)
    graph = dgl.reverse(train)
    graph.get_node_partition_policy = lambda ntype: None
    return graph


class _Servers:
    """``dist_tensor`` made plain tensors (every entry -7 until written)."""

    def __init__(self):
        self.made = {}

    def __call__(self, graph, policy, name, shape, rank, dtype=torch.float32):
        self.made[name] = torch.full(shape, -7, dtype=dtype)
        return self.made[name]


def _shard(model_or_evidence, edges, seed: int = 0):
    """``shard_path_evidence`` without servers: the relations from a local graph of the servers'
    layout, the other rows in plain tensors; returns its result and the tensors it made."""
    servers = _Servers()
    orig, new_ids = _id_map(seed)
    with mock.patch.object(sharded_module, "dist_tensor", servers):
        out = shard_path_evidence(model_or_evidence, _stored(edges, new_ids), orig, torch.arange(N), rank=0)
    assert all((t != -7).all() for t in servers.made.values())  # every row written
    return out, servers.made


def _evidence(seed: int, symmetric: bool = False):
    edges = _edges(seed)
    if symmetric:
        edges = {r: types.SimpleNamespace(src=torch.cat([e.src, e.dst]), dst=torch.cat([e.dst, e.src]))
                 for r, e in edges.items()}
    similar = _edges(seed + 50, count=60)["substitute"]
    counter = adamic_adar_counter(N, {**edges, SIMILAR: similar}, weigh_by=RELATIONS)
    whole = PathEvidence(counter, RELATIONS)
    fetched = copy.copy(whole)
    fetched.__dict__ = dict(whole.__dict__)
    _, made = _shard(types.SimpleNamespace(evidence=fetched), edges, seed)
    assert isinstance(fetched.counter, FetchedPathCounter) and fetched._table is None
    # the relations' out-edges from the servers' graph; their other in-edges (none where each
    # edge is there both ways) and the look-alikes as padded rows
    assert sorted(made) == (["mmsc_evidence_2_rows", "mmsc_evidence_weight"] if symmetric else
                            ["mmsc_evidence_0_in_rows", "mmsc_evidence_1_in_rows", "mmsc_evidence_2_rows",
                             "mmsc_evidence_weight"])
    return whole, fetched


@pytest.mark.parametrize("symmetric", [False, True])
def test_counts_from_fetched_rows_are_the_whole_graphs_counts(symmetric):
    whole, fetched = _evidence(0, symmetric)
    g = torch.Generator().manual_seed(1)
    src, dst = torch.randint(0, N, (300,), generator=g), torch.randint(0, N, (300,), generator=g)
    src[:20] = 0  # the hub
    want = torch.stack([whole.counter.pairs(x, y, src, dst) for x, y in whole.metapaths]
                       + [whole.counter.linked(x, src, dst) for x in whole.links], -1)
    assert want[:, : len(whole.metapaths)].sum() > 0 and want[:, len(whole.metapaths):].sum() > 0
    assert torch.allclose(fetched.counts(src, dst), want, atol=1e-5)
    assert torch.allclose(whole.counts(src, dst), want, atol=1e-5)  # the pair table agrees too
    queries, candidates = src[:7], torch.randint(0, N, (7, 90), generator=g)  # >= 64: dense rows on one machine
    assert whole.dense_rows_cheaper(90) and not fetched.dense_rows_cheaper(90)
    assert torch.allclose(fetched.query_counts(queries, candidates), whole.query_counts(queries, candidates),
                          atol=1e-5)


def test_reached_pairs_from_fetched_rows_are_the_whole_graphs():
    whole, fetched = _evidence(1)
    src = torch.tensor([0, 5, 71, 33, 5])  # the hub, an edgeless item, a repeat
    want, got = whole.reached(src), fetched.reached(src)
    order_w = torch.argsort(want[0] * N + want[1])
    order_g = torch.argsort(got[0] * N + got[1])
    assert torch.equal(want[0][order_w], got[0][order_g]) and torch.equal(want[1][order_w], got[1][order_g])
    assert torch.allclose(want[2][order_w], got[2][order_g], atol=1e-5)
    assert want[0].numel() > 50


def test_around_one_hop_leaves_out_what_two_hops_need():
    """The neighbourhood is what its counts need and no more: one hop from an item holds its
    edges, and the two-hop ends need the second hop (a mutant that skips ``hops`` fails here)."""
    _, fetched = _evidence(2)
    one, nodes_one, _ = fetched.counter.around(torch.tensor([3]))
    two, nodes_two, _ = fetched.counter.around(torch.tensor([3]), hops=2)
    assert nodes_one.numel() < nodes_two.numel()
    assert sum(g.num_edges for g in one.graphs.values()) < sum(g.num_edges for g in two.graphs.values())


def _model(seed: int = 0) -> MMSC:
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(N).repeat_interleave(3)
    tables = {name: CSR.from_edges(rows, torch.randint(0, N, (rows.numel(),), generator=g), N) for name in ("s", "c")}
    config = ModelConfig(hidden=16, heads=2, graph_branch=0, ssl_weight=0.0, content_paths=0)
    torch.manual_seed(seed)
    return MMSC(N, tables, config, graph_edges=_edges(seed))


def test_mmsc_with_evidence_on_the_servers_is_mmsc_and_unshards_to_its_counter(monkeypatch):
    """``shard_path_evidence`` gives the model a fetched counter with the same loss and
    gradients; ``unshard`` puts back the same graphs, weights and pair table."""
    one = _model(0)
    other = copy.deepcopy(one)
    other.evidence = copy.copy(one.evidence)
    other.evidence.__dict__ = dict(one.evidence.__dict__)  # the same weights, its own counter slot
    whole_counter = one.evidence.counter
    sharded, _ = _shard(other, _edges(0), seed=3)  # the edges the model was built with (_model)
    assert isinstance(other.evidence.counter, FetchedPathCounter) and other.evidence._table is None
    batch = {r: (torch.tensor([0, 2, 3, 70]), torch.tensor([4, 5, 6, 1]),
                 torch.tensor([[7, 8], [9, 10], [11, 12], [0, 13]])) for r in RELATIONS}
    torch.manual_seed(1)  # the same dropout draws in both
    loss_one = one.loss(batch)["total"]
    torch.manual_seed(1)
    fetches = []
    counter = other.evidence.counter
    monkeypatch.setattr(counter, "around", lambda *a, **k: fetches.append(1) or FetchedPathCounter.around(counter, *a, **k))
    loss_other = other.loss(batch)["total"]
    assert len(fetches) == 1  # one neighbourhood for the step's pairs of both relations
    assert_same_training_signal(one, other, loss_one, loss_other)
    assert sum(float(p.grad.abs().sum()) for p in other.evidence.parameters() if p.grad is not None) > 0
    sharded.unshard()
    back = other.evidence.counter
    for name, g in whole_counter.graphs.items():
        assert torch.equal(back.graphs[name].indptr, g.indptr) and torch.equal(back.graphs[name].indices, g.indices)
    assert torch.equal(back.weight, whole_counter.weight)
    assert torch.equal(other.evidence._table.keys, one.evidence._table.keys)
    assert torch.equal(other.evidence._table.values, one.evidence._table.values)


def test_padded_neighbours_are_each_rows_sorted_list():
    g = CSR.from_edges(torch.tensor([0, 0, 2]), torch.tensor([2, 1, 0]), 3)
    assert padded_neighbours(g, torch.tensor([2, 1, 0]), 3).tolist() == [[0, -1, -1], [-1, -1, -1], [1, 2, -1]]


def test_pair_counts_of_several_sets_are_each_sets_counts():
    whole, fetched = _evidence(4)
    g = torch.Generator().manual_seed(5)
    sets = [(torch.randint(0, N, (6,), generator=g), torch.randint(0, N, (6,), generator=g)),
            (torch.randint(0, N, (6, 3), generator=g), torch.randint(0, N, (6, 3), generator=g))]
    for evidence in (whole, fetched):
        together = evidence.pair_counts(sets)
        for got, (src, dst) in zip(together, sets):
            assert got.shape == (*src.shape, len(evidence.names))
            assert torch.equal(got, evidence.counts(src, dst))


def test_a_graph_the_servers_do_not_hold_is_written_as_padded_rows():
    """Training edges changed after partitioning (``train_noise``): the servers' graph gives
    edges the counter lacks, so each relation's rows are written out whole; the counts hold."""
    model = _model(0)
    whole = copy.copy(model.evidence)
    whole.__dict__ = dict(model.evidence.__dict__)
    _, made = _shard(model, _edges(9), seed=3)  # other edges than the model's
    assert sorted(made) == ["mmsc_evidence_0_rows", "mmsc_evidence_1_rows", "mmsc_evidence_weight"]
    src, dst = torch.randint(0, N, (200,)), torch.randint(0, N, (200,))
    assert torch.allclose(model.evidence.counts(src, dst), whole.counts(src, dst), atol=1e-5)
