"""The graph branch's capped propagation table (``graph_branch_cap``) against a slow, obvious
dense reference: values, gradients, and the model that reads it."""
import pytest
import torch

from mmsc_dgl.ops.capped import capped_propagation, gather_rows
from mmsc_dgl.ops.paths import normalised, undirected
from mmsc_dgl.ops.sparse import SparseMatrix, propagate


def _graph(n=120, edges=360, seed=0, weighted=False):
    """LightGCN's normalised matrix of a random graph; ``weighted``: the same non-zeros with
    random weights, so that no two entries of a product tie (float32 and the float64 reference
    would order a tie by their own rounding)."""
    g = torch.Generator().manual_seed(seed)
    adj = normalised(undirected(torch.randint(0, n, (edges,), generator=g),
                                torch.randint(0, n, (edges,), generator=g), n))
    if weighted:
        adj = SparseMatrix(adj.csr, torch.rand(adj.csr.num_edges, generator=g) + 0.1)
    return adj


def _dense_reference(adjacency, layers, cap):
    """In float64: each hop the dense matrix times the hop before, each row's ``cap`` largest
    entries kept (ties: the smaller column); the mean of the hops cut the same way."""
    a = adjacency.tensor().to_dense().double()
    n = a.shape[0]

    def top(x):
        out = torch.zeros_like(x)
        for i in range(n):
            cols = [j for j in range(n) if x[i, j] != 0]
            cols.sort(key=lambda j: (-float(x[i, j]), j))
            out[i, cols[:cap]] = x[i, cols[:cap]]
        return out

    hop = torch.eye(n, dtype=torch.float64)
    total = hop.clone()
    for _ in range(layers):
        hop = top(a @ hop)
        total = total + hop
    return top(total / (layers + 1))


def _dense(cols, vals, n):
    return torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, cols, vals.double())


@pytest.mark.parametrize("layers,cap,budget", [(3, 120, 1 << 24), (3, 8, 300), (2, 3, 50), (1, 1, 1 << 24)])
def test_capped_table_matches_the_dense_reference(layers, cap, budget):
    adj = _graph(weighted=True)
    cols, vals = capped_propagation(adj, layers, cap, budget=budget)  # small budgets: many chunks
    assert cols.shape == vals.shape == (120, cap)
    want = _dense_reference(adj, layers, cap)
    torch.testing.assert_close(_dense(cols, vals, 120), want, rtol=1e-5, atol=1e-6)
    # padded slots hold the row's own id with weight 0
    pad = vals == 0
    assert (cols[pad] == torch.arange(120).unsqueeze(1).expand_as(cols)[pad]).all()


def test_an_uncut_table_is_lightgcn_exactly_in_values_and_gradients():
    adj = _graph()
    cols, vals = capped_propagation(adj, 3, 120)   # no row can hold more than every item
    table = torch.randn(120, 8, dtype=torch.float32, requires_grad=True)
    nodes = torch.tensor([5, 0, 5, 119, 42])
    fast = gather_rows(cols, vals, table, nodes)
    slow = propagate(adj, table, 3)[nodes]
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(fast)
    g_fast, = torch.autograd.grad((fast * weights).sum(), table)
    g_slow, = torch.autograd.grad((slow * weights).sum(), table)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-5, atol=1e-6)


def test_a_cut_table_keeps_each_rows_largest_weights():
    adj = _graph(n=300, edges=1500)
    cols, vals = capped_propagation(adj, 3, 16)
    exact = _dense(*capped_propagation(adj, 3, 300), 300)
    cut = _dense(cols, vals, 300)
    assert (cut <= exact + 1e-6).all()                        # nothing is added, only left out
    kept = cut.sum(1) / exact.sum(1)
    assert kept.min() > 0.2 and kept.mean() > 0.6             # most of each row's weight stays
    cut_rows = (exact != 0).sum(1) > 16
    assert cut_rows.any() and ((cut != 0).sum(1)[cut_rows] == 16).all()  # a cut row is full


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="cap must be >= 1"):
        capped_propagation(_graph(), 3, 0)
