"""Issue 30.2: MMSC under ``torch.compile``.  Inference (``model(nodes)``, ``score``) and the
default training step trace whole (``fullgraph=True``) through the padded neighbour lists and
the gather-scatter products that the traced code takes; every such path is checked against the
eager one it stands for (values and gradients), in eager mode (the switch pretended on) and
compiled.  No DGL: the models are built from plain tensors, as on a GPU host."""
import types

import pytest
import torch

import mmsc_dgl.ops.paths as paths_module
import mmsc_dgl.ops.sparse as sparse_module
import mmsc_dgl.models.mmsc as mmsc_module
from mmsc_dgl.config import ModelConfig
from mmsc_dgl.features.base import ContentFeatures
from mmsc_dgl.models.mmsc import MMSC
from mmsc_dgl.nn import MetaPathAttention, NormalisedConv
from mmsc_dgl.ops import CSR, edge_softmax_aggregate
from mmsc_dgl.ops.paths import adamic_adar_counter, normalised_adjacency
from mmsc_dgl.ops.sparse import sparse_mm

N = 80
RELATIONS = ("substitute", "complement")


def _random_csr(num_rows, num_src, most, seed, empty_every=5):
    g = torch.Generator().manual_seed(seed)
    degrees = torch.randint(0, most + 1, (num_rows,), generator=g)
    degrees[::empty_every] = 0  # rows without neighbours
    indptr = torch.zeros(num_rows + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(degrees, 0)
    return CSR(indptr, torch.randint(0, num_src, (int(indptr[-1]),), generator=g), num_src)


def _edges(seed):
    g = torch.Generator().manual_seed(seed)
    return {r: types.SimpleNamespace(src=torch.randint(0, N, (150,), generator=g),
                                     dst=torch.randint(0, N, (150,), generator=g)) for r in RELATIONS}


def _model(seed=0, features=True, **config):
    tables = {name: _random_csr(N, N, 4, seed + i) for i, name in enumerate(("s", "c", "s-c"))}
    content = None
    if features:
        g = torch.Generator().manual_seed(seed)
        mask = torch.rand(N, 3, generator=g) > 0.3
        content = ContentFeatures(torch.randn(N, 3, 12, generator=g), mask, source="test")
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden=16, heads=2, semantic_hidden=8, evidence_hidden=8, feat_drop=0.0, **config)
    return MMSC(N, tables, cfg, content, impl="reference", graph_edges=_edges(seed))


@pytest.fixture
def pretend_compiling(monkeypatch):
    """The switch that traced code reads, turned on in eager mode: the paths it selects can then
    be checked value for value, and gradients, against the eager paths."""
    def turn_on():
        for module in (paths_module, sparse_module, mmsc_module):
            monkeypatch.setattr(module, "is_compiling", lambda: True)
    return turn_on


def test_padded_lists_hold_the_rows_of_select_rows():
    csr = _random_csr(40, 25, 6, seed=1)
    rows = torch.tensor([3, 0, 5, 5, 39, 12])
    nbr, mask = csr.padded(rows)
    assert nbr.shape == mask.shape == (6, csr.max_degree())
    sub = csr.select_rows(rows)
    for b in range(len(rows)):
        want = sub.indices[sub.indptr[b]: sub.indptr[b + 1]].tolist()
        assert nbr[b][mask[b]].tolist() == want
        assert (nbr[b][~mask[b]] == 0).all()
    narrow, narrow_mask = csr.padded(rows, width=2)  # the first two neighbours of each row
    assert torch.equal(narrow, nbr[:, :2]) and torch.equal(narrow_mask, mask[:, :2])
    empty = CSR(torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    nbr, mask = empty.padded(torch.tensor([0, 2]))
    assert nbr.shape == (2, 0) and empty.max_degree() == 0
    assert csr.to("cpu").max_degree() == csr.max_degree()


def test_the_traced_sparse_product_is_the_sparse_product(pretend_compiling):
    adjacency = normalised_adjacency([_random_csr(N, N, 5, seed=2)], N)
    dense = torch.randn(N, 6, requires_grad=True)
    want = sparse_mm(adjacency, dense)
    (grad_want,) = torch.autograd.grad(want.square().sum(), dense)
    pretend_compiling()
    got = sparse_mm(adjacency, dense)
    (grad_got,) = torch.autograd.grad(got.square().sum(), dense)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad_got, grad_want)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 in both paths, as the docstring says
        assert sparse_mm(adjacency, dense.to(torch.bfloat16)).dtype == torch.float32


def test_padded_layers_match_the_layers_on_the_batch_rows():
    csr = _random_csr(30, 30, 5, seed=3)
    rows = torch.tensor([0, 4, 7, 9, 15, 22, 29])
    feat = torch.randn(30, 10, requires_grad=True)
    nbr, mask = csr.padded(rows)
    sub = csr.select_rows(rows)
    layer = MetaPathAttention(10, 4, num_heads=3, activation=torch.nn.functional.elu, residual=True)
    want, attention = layer(sub, (feat, feat[rows]), get_attention=True)
    got, alpha = layer.forward_padded(feat[nbr], feat[rows], mask, get_attention=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(alpha[mask], attention)
    assert (alpha[~mask] == 0).all() and (got[~mask.any(1)] == 0).all()
    grads = [torch.autograd.grad(out.sin().sum(), [feat, layer.attn_l])
             for out in (want, layer.forward_padded(feat[nbr], feat[rows], mask))]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    conv = NormalisedConv(10, 5)
    degrees = csr.degrees
    want = conv(sub, feat, deg_dst=degrees[rows], deg_src=degrees)
    got = conv.forward_padded(feat[nbr], mask, degrees[rows], degrees[nbr])
    torch.testing.assert_close(got, want)


def test_padded_attention_keeps_the_dispatchers_precision_rule():
    """Under autocast every path gives one dtype: the kernel's output in the projected features'
    dtype (bf16), then the float32 bias promotes it; with edge weights too (that path bypassed
    the dispatcher), and the padded lists."""
    csr = _random_csr(20, 20, 4, seed=4)
    feat = torch.randn(20, 8)
    layer = MetaPathAttention(8, 4, num_heads=2)
    nbr, mask = csr.padded(torch.arange(20))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = layer(csr, feat)
        weighted = layer(csr, feat, edge_weight=torch.rand(csr.num_edges))
        padded = layer.forward_padded(feat[nbr], feat, mask)
    assert eager.dtype == weighted.dtype == padded.dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer.fc(feat).view(-1, 2, 4)
        logits = torch.randn(csr.num_edges, 2)
        for weight in (None, torch.rand(csr.num_edges)):
            out, alpha = edge_softmax_aggregate(csr, logits, z, return_attention=True, edge_weight=weight)
            assert (out.dtype, alpha.dtype) == (torch.bfloat16, torch.float32)
    torch.testing.assert_close(padded.float(), eager.float(), atol=2e-2, rtol=2e-2)


def test_the_padded_walk_counts_the_paths_that_pairs_counts(pretend_compiling):
    counter = adamic_adar_counter(N, _edges(5))
    src, dst = torch.randint(0, N, (3, 40)), torch.randint(0, N, (3, 40))
    want = {(x, y): counter.pairs(x, y, src, dst) for x in RELATIONS for y in RELATIONS}
    assert sum(w.count_nonzero() for w in want.values()) > 0  # the check sees some paths
    pretend_compiling()
    for (x, y), counts in want.items():
        torch.testing.assert_close(counter.pairs(x, y, src, dst), counts)


CONFIGS = {
    "default": {},
    "every graph part": {"full_first_hop": True, "propagate_ids": 2},
    "ablations": {"semantic_fusion": "concat", "task_gate": False, "score": "cosine", "path_evidence": False},
}


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
def test_the_padded_encoder_is_the_encoder(config):
    model = _model(**CONFIGS[config])
    nodes = torch.tensor([0, 3, 5, 8, 13, 21, 34, 55, 79, 5])
    out = {}
    for padded in (False, True):
        model.zero_grad()
        z, weights = model.encode(nodes, padded=padded, get_attention=True)
        sum(model.head(z[r], r, nodes).sin().sum() for r in RELATIONS).backward()
        out[padded] = (z, weights, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (z0, w0, g0), (z1, w1, g1) = out[False], out[True]
    for r in RELATIONS:
        torch.testing.assert_close(z1[r], z0[r])
        torch.testing.assert_close(w1[r], w0[r])
    assert g0.keys() == g1.keys() and len(g0) > 10
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], msg=name)


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
def test_inference_compiles_whole_and_agrees_with_eager(config):
    model = _model(**CONFIGS[config]).eval()
    nodes = torch.arange(0, N, 3)
    src, dst = torch.tensor([[0, 5], [7, 11]]), torch.tensor([[1, 2], [9, 5]])
    forward = torch.compile(model, fullgraph=True, backend="aot_eager")
    score = torch.compile(model.score, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for r in RELATIONS:
            torch.testing.assert_close(forward(nodes, r), model(nodes, r))
            torch.testing.assert_close(score(src, dst, r), model.score(src, dst, r))


def _batch(seed, generator=False):
    g = torch.Generator().manual_seed(seed)
    batch = {r: (torch.randint(0, N, (12,), generator=g), torch.randint(0, N, (12,), generator=g),
                 torch.randint(0, N, (12, 4), generator=g)) for r in RELATIONS}
    if generator:
        batch["generator"] = torch.Generator().manual_seed(seed)
    return batch


def _loss_and_grads(model, loss_fn, batch):
    model.zero_grad()
    torch.manual_seed(5)  # the same draws (evidence dropout) from torch's generator, eager and traced
    total = loss_fn(batch)["total"]
    total.backward()
    return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_default_training_step_compiles_whole_with_the_same_gradients():
    model = _model().train()
    batch = _batch(6)
    want, grads = _loss_and_grads(model, model.loss, batch)
    got, compiled_grads = _loss_and_grads(model, torch.compile(model.loss, fullgraph=True, backend="aot_eager"), batch)
    torch.testing.assert_close(got, want)
    assert grads.keys() == compiled_grads.keys()
    for name in grads:
        torch.testing.assert_close(compiled_grads[name], grads[name], msg=name)


def test_the_infonce_step_breaks_only_where_it_draws_from_the_batchs_generator():
    """With ``ssl_weight`` > 0 the graph-dropout views draw from ``batch["generator"]``: dynamo
    (torch 2.2) does not trace a ``torch.Generator`` argument, so each draw is a graph break
    (docs/api.md); nothing else is."""
    import torch._dynamo
    model = _model(ssl_weight=0.1).train()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.loss)(_batch(7, generator=True))
    assert explained.graph_break_count > 0
    assert all("Generator" in b.reason for b in explained.break_reasons), [b.reason for b in explained.break_reasons]


def test_weights_saved_before_the_parts_load_into_the_parts():
    """Issue 30.9: the fusion and the graph branch became parts of their own (``fusion.*``,
    ``graph_branch.*``); weights saved under the earlier names (``semantic_gate.*``,
    ``semantic_concat.*``, ``graph_shared.*``, ``graph_relation.*``, ``content.*``,
    ``item_embedding.*``) load into them and give the same rows."""
    old_names = {"fusion.": None, "graph_branch.shared.": "graph_shared.", "graph_branch.relation.": "graph_relation.",
                 "input.content.": "content.", "input.item_embedding.": "item_embedding."}
    for config, fusion_name in (({}, "semantic_gate."), ({"semantic_fusion": "concat"}, "semantic_concat.")):
        trained = _model(seed=1, **config).eval()
        saved = {}
        for key, value in trained.state_dict().items():
            for new, old in old_names.items():
                if key.startswith(new):
                    key = (old or fusion_name) + key[len(new):]
                    break
            saved[key] = value
        assert any(k.startswith(fusion_name) for k in saved) and any(k.startswith("graph_shared.") for k in saved)
        fresh = _model(seed=1, **config).eval()  # the same graphs; other weights until loaded
        with torch.no_grad():
            for p in fresh.parameters():
                p.normal_()
        fresh.load_state_dict(saved)  # strict: every key lands somewhere
        nodes = torch.arange(N)
        with torch.no_grad():
            for r in RELATIONS:
                torch.testing.assert_close(fresh(nodes, r), trained(nodes, r))
