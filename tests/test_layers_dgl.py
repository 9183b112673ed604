"""The layers as a DGL user calls them: DGL graphs and blocks, edge weights, compile, autocast,
TorchScript, and a CSR held by a module (issue 16, "DGL-native layers")."""
import pytest
import torch

dgl = pytest.importorskip("dgl")

from mmsc_dgl.nn import MetaPathAttention, NormalisedConv  # noqa: E402
from mmsc_dgl.ops import CSR  # noqa: E402


def _graph(n=40, e=160, seed=0):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=gen)
    dst = torch.randint(0, n, (e,), generator=gen)
    g = dgl.graph((src, dst), num_nodes=n)
    return dgl.add_self_loop(dgl.remove_self_loop(g))  # every node has an in-edge, as GATConv wants


def _gatconv_like(layer: MetaPathAttention):
    from dgl.nn import GATConv
    conv = GATConv(layer.in_feats, layer.out_feats, layer.num_heads, negative_slope=layer.negative_slope,
                   bias=True, activation=layer.activation)
    with torch.no_grad():
        conv.fc.weight.copy_(layer.fc.weight)
        conv.attn_l.copy_(layer.attn_l)
        conv.attn_r.copy_(layer.attn_r)
        conv.bias.copy_(torch.randn_like(conv.bias))
        layer.bias.copy_(conv.bias)
    return conv


@pytest.mark.parametrize("weighted", [False, True])
def test_metapath_attention_on_a_dgl_graph_matches_gatconv(weighted):
    torch.manual_seed(0)
    g = _graph()
    layer = MetaPathAttention(8, 4, num_heads=2, impl="reference")
    conv = _gatconv_like(layer)
    x = torch.randn(g.num_nodes(), 8, requires_grad=True)
    w = torch.rand(g.num_edges()) if weighted else None
    ours, a_ours = layer(g, x, edge_weight=w, get_attention=True)
    theirs, a_theirs = conv(g, x, edge_weight=w, get_attention=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # attention comes in CSR order; edge_ids maps it to DGL's edge ids
    csr = CSR.from_dgl(g)
    back = torch.empty_like(a_ours)
    back[csr.edge_ids] = a_ours
    torch.testing.assert_close(back, a_theirs.squeeze(-1), atol=1e-6, rtol=1e-5)
    g1, = torch.autograd.grad(ours.sum(), x)
    g2, = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_edge_weight_changes_the_output():
    g = _graph(seed=1)
    layer = MetaPathAttention(8, 4, num_heads=1)
    x = torch.randn(g.num_nodes(), 8)
    plain = layer(g, x)
    ones = layer(g, x, edge_weight=torch.ones(g.num_edges()))
    torch.testing.assert_close(plain, ones, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(plain, layer(g, x, edge_weight=torch.rand(g.num_edges())))


def test_layers_take_dgl_blocks_from_a_sampler():
    torch.manual_seed(0)
    g = _graph(n=60, e=300, seed=2)
    x = torch.randn(g.num_nodes(), 8)
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
    seeds = torch.tensor([3, 7, 11, 50])
    input_nodes, output_nodes, (block,) = sampler.sample_blocks(g, seeds)
    layer = MetaPathAttention(8, 4, num_heads=2)
    conv = NormalisedConv(8, 4, activation=None)
    full = layer(g, x)[output_nodes]
    mini = layer(block, x[input_nodes])
    torch.testing.assert_close(mini, full, atol=1e-5, rtol=1e-5)
    full_conv = conv(g, x)[output_nodes]
    deg_out = g.out_degrees()
    mini_conv = conv(block, x[input_nodes], deg_dst=g.in_degrees()[output_nodes], deg_src=deg_out[input_nodes])
    torch.testing.assert_close(mini_conv, full_conv, atol=1e-5, rtol=1e-5)


def test_csr_from_dgl_orientation_and_heterographs():
    g = dgl.heterograph({("item", "also_viewed", "item"): ([0, 1, 2], [1, 2, 1]),
                         ("user", "bought", "item"): ([0, 0], [1, 2])})
    csr = CSR.from_dgl(g, "also_viewed")
    assert csr.indptr.tolist() == [0, 0, 2, 3]      # row i: the sources of edges into i
    assert csr.indices.tolist() == [0, 2, 1]
    bought = CSR.from_dgl(g, ("user", "bought", "item"))
    assert (bought.num_rows, bought.num_src) == (3, 1)
    with pytest.raises(ValueError, match="pass the layer etype=NAME"):
        CSR.from_dgl(g)
    with pytest.raises(TypeError, match="DGLGraph"):
        MetaPathAttention(4, 2)("not a graph", torch.randn(3, 4))


def test_a_csr_held_by_a_module_follows_to():
    class Mine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.adj = CSR(torch.tensor([0, 1, 2]), torch.tensor([1, 0]))
            self.layer = MetaPathAttention(4, 2)

        def forward(self, x):
            return self.layer(self.adj, x)

    m = Mine()
    m(torch.randn(2, 4))  # caches row ids, which must move too
    assert "adj.indptr" not in m.state_dict()
    m.to("meta")
    assert m.adj.indptr.device.type == "meta" and m.adj.row_ids().device.type == "meta"
    copy = CSR(torch.tensor([0, 1]), torch.tensor([0]))
    moved = copy.to("meta")
    assert moved is not copy and copy.indptr.device.type == "cpu"


@pytest.mark.parametrize("layer_kind", ["attention", "attention-dgl", "conv"])
def test_layers_compile_without_graph_breaks(layer_kind):
    torch._dynamo.reset()
    g = _graph(n=30, e=90, seed=3)
    csr = CSR.from_dgl(g)
    if layer_kind == "conv":
        layer = NormalisedConv(8, 4)
    else:  # impl="dgl" runs the reference kernel while compiled (dynamo cannot trace DGL graphs)
        layer = MetaPathAttention(8, 4, num_heads=2, impl="dgl" if layer_kind == "attention-dgl" else "reference")
    x = torch.randn(30, 8)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(csr, x), layer(csr, x))


def test_layers_run_under_bf16_autocast():
    g = _graph(seed=4)
    x = torch.randn(g.num_nodes(), 8)
    layer = MetaPathAttention(8, 4, num_heads=2, impl="reference")
    conv = NormalisedConv(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(g, x)
        out_conv = conv(g, x)
    assert torch.isfinite(out.float()).all()  # the linear layers ran in bf16; the sums follow their inputs
    torch.testing.assert_close(out.float(), layer(g, x), atol=0.05, rtol=0.05)
    torch.testing.assert_close(out_conv.float(), conv(g, x), atol=0.05, rtol=0.05)


def test_torchscript_is_refused_with_a_clear_message():
    for module in (MetaPathAttention(4, 2), NormalisedConv(4, 2), CSR(torch.tensor([0, 1]), torch.tensor([0]))):
        with pytest.raises(RuntimeError, match="not TorchScript-able"):
            torch.jit.script(module)


def _every_kind_of_graph():
    """Each way a DGL user makes the graph a layer gets (issue 30.1): name -> (graph, its
    destination nodes' ids in ``g``, its source nodes' ids in ``g``)."""
    g = _graph(n=30, e=120, seed=3)
    src, dst = g.edges()
    n = g.num_nodes()
    all_nodes = torch.arange(n)
    hetero = dgl.heterograph({("item", "substitute", "item"): (src, dst), ("item", "complement", "item"): (dst, src)},
                             num_nodes_dict={"item": n})
    seeds = torch.arange(10)
    block = dgl.to_block(dgl.in_subgraph(g, seeds), seeds)
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
    _, _, (sampled,) = sampler.sample_blocks(g, seeds)
    hetero_block = dgl.to_block(dgl.in_subgraph(hetero, {"item": seeds}), {"item": seeds})["substitute"]
    cases = {"dgl.graph": (g, all_nodes, all_nodes),
             "heterograph[etype]": (hetero["substitute"], all_nodes, all_nodes),
             "int32": (g.int(), all_nodes, all_nodes),
             "to_block(in_subgraph)": (block, block.dstdata[dgl.NID], block.srcdata[dgl.NID]),
             "sampler block": (sampled, sampled.dstdata[dgl.NID], sampled.srcdata[dgl.NID]),
             "heterograph block[etype]": (hetero_block, hetero_block.dstdata[dgl.NID],
                                          hetero_block.srcdata[dgl.NID])}
    for fmt in ("coo", "csr", "csc"):
        cases[f"formats({fmt!r})"] = (g.formats(fmt), all_nodes, all_nodes)
        cases[f"block formats({fmt!r})"] = (block.formats(fmt), block.dstdata[dgl.NID], block.srcdata[dgl.NID])
    return g, cases


@pytest.mark.parametrize("case", list(_every_kind_of_graph()[1]))
def test_every_kind_of_dgl_graph_gives_the_full_graph_rows(case):
    """A layer on each kind of graph gives, for its destination nodes, the rows the same layer
    gives on the whole graph, and CSR.from_dgl keeps every edge with its edge id."""
    g, cases = _every_kind_of_graph()
    graph, dst_ids, src_ids = cases[case]
    torch.manual_seed(0)
    layer = MetaPathAttention(8, 4, num_heads=2, impl="reference")
    x = torch.randn(g.num_nodes(), 8)
    full = layer(g, x)
    part = layer(graph, x[src_ids.long()])
    torch.testing.assert_close(part, full[dst_ids.long()], atol=1e-5, rtol=1e-5)
    csr = CSR.from_dgl(graph)
    src, dst, eids = graph.formats("coo").edges(form="all", order="eid") if case.startswith(("formats", "block formats")) \
        else graph.edges(form="all", order="eid")
    assert sorted(zip(csr.row_ids().tolist(), csr.indices.tolist(), csr.edge_ids.tolist())) == \
        sorted(zip(dst.tolist(), src.tolist(), eids.tolist()))


def test_a_block_with_edges_outside_its_destinations_is_an_error_not_a_crash():
    """``dgl.to_block(g, seeds)`` on a whole graph keeps edges into other nodes (marked -1): DGL
    2.1 segfaults when asked for that block's CSC.  The layer refuses it with the fix; run in a
    child process so that a regression shows as a failed test, not a dead suite."""
    import subprocess
    import sys
    code = ("import torch, dgl; from mmsc_dgl.nn import MetaPathAttention\n"
            "g = dgl.heterograph({('item', 's', 'item'): (torch.arange(20), torch.arange(20).roll(1))})\n"
            "b = dgl.to_block(g, torch.arange(10))\n"
            "try:\n    MetaPathAttention(16, 8, 2)(b, torch.randn(b.num_src_nodes(), 16))\n"
            "except ValueError as err:\n    print('refused:', err)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stdout and "in_subgraph" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_a_graph_on_another_device_than_the_features():
    g = _graph(seed=4)
    layer = MetaPathAttention(8, 4, num_heads=2).cuda()
    x = torch.randn(g.num_nodes(), 8, device="cuda")
    torch.testing.assert_close(layer(g, x), layer(g.to("cuda"), x))


def test_layers_take_etype_on_a_heterograph():
    """Issue 30.5: the error on a heterograph told the user to pass etype=, which forward did not
    accept; it does now, and picks what graph[etype] picks."""
    g = _graph(seed=5)
    src, dst = g.edges()
    hetero = dgl.heterograph({("item", "substitute", "item"): (src, dst), ("item", "complement", "item"): (dst, src)})
    x = torch.randn(hetero.num_nodes(), 8)
    torch.manual_seed(0)
    attention, conv = MetaPathAttention(8, 4, num_heads=2), NormalisedConv(8, 4)
    for layer in (attention, conv):
        torch.testing.assert_close(layer(hetero, x, etype="complement"), layer(hetero["complement"], x))
        torch.testing.assert_close(layer(hetero, x, etype=("item", "substitute", "item")), layer(hetero["substitute"], x))
        with pytest.raises(ValueError, match=r"2 edge types .*etype=NAME"):
            layer(hetero, x)


def test_in_feats_per_side_matches_gatconv_on_a_bipartite_graph():
    """Issue 30.5: in_feats=(src_feats, dst_feats), as GATConv and HANConv take it: one projection
    per side, checked against DGL's GATConv with the same weights (values and gradients)."""
    from dgl.nn import GATConv
    gen = torch.Generator().manual_seed(6)
    g = dgl.heterograph({("user", "rates", "item"): (torch.randint(0, 30, (90,), generator=gen),
                                                     torch.randint(0, 12, (90,), generator=gen))},
                        num_nodes_dict={"user": 30, "item": 12})
    g = dgl.add_edges(g, torch.arange(12) % 30, torch.arange(12))  # every item has a rater
    torch.manual_seed(0)
    layer = MetaPathAttention((10, 6), 4, num_heads=2, residual=True, impl="reference")
    conv = GATConv((10, 6), 4, 2, residual=True, bias=True)
    with torch.no_grad():
        conv.fc_src.weight.copy_(layer.fc_src.weight)
        conv.fc_dst.weight.copy_(layer.fc_dst.weight)
        conv.attn_l.copy_(layer.attn_l)
        conv.attn_r.copy_(layer.attn_r)
        conv.res_fc.weight.copy_(layer.res_fc.weight)
        # DGL 2.1 keeps the bias in its residual projection when there is one
        bias = conv.bias if conv.bias is not None else conv.res_fc.bias
        bias.copy_(torch.randn_like(bias))
        layer.bias.copy_(bias)
    users = torch.randn(30, 10, requires_grad=True)
    items = torch.randn(12, 6, requires_grad=True)
    ours, theirs = layer(g, (users, items)), conv(g, (users, items))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    got = torch.autograd.grad(ours.sum(), (users, items))
    want = torch.autograd.grad(theirs.sum(), (users, items))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"pass feat=\(feat_src, feat_dst\)"):
        MetaPathAttention((6, 6), 4)(dgl.graph(([0, 1], [1, 0])), torch.randn(2, 6))


def test_han_conv_matches_dgls_han_layer_on_metapath_graphs():
    """Issue 30.5: HANConv on DGL meta-path graphs is the HANLayer of DGL's HAN example: a GATConv
    per meta-path (ELU, heads concatenated), then semantic attention with weights averaged over
    the nodes; same weights, same values and gradients."""
    from mmsc_dgl.nn import HANConv
    gen = torch.Generator().manual_seed(3)
    n = 40
    hg = dgl.heterograph({("item", r, "item"): (torch.randint(0, n, (120,), generator=gen),
                                                torch.randint(0, n, (120,), generator=gen))
                          for r in ("substitute", "complement")}, num_nodes_dict={"item": n})
    paths = [("substitute",), ("complement", "substitute")]
    graphs = {p: dgl.add_self_loop(dgl.remove_self_loop(dgl.metapath_reachable_graph(hg, list(p)))) for p in paths}
    torch.manual_seed(0)
    layer = HANConv(8, 4, metapaths=paths, num_heads=2, semantic_hidden=16, impl="reference")
    convs = [_gatconv_like(mine) for mine in layer.convs.values()]  # ELU, as HANConv's default
    x = torch.randn(n, 8, requires_grad=True)
    ours, (alpha, beta) = layer(graphs, x, get_attention=True)
    z = torch.stack([conv(graphs[p], x).flatten(1) for conv, p in zip(convs, paths)], dim=1)  # [N, P, 8]
    w = layer.semantic.query(torch.tanh(layer.semantic.project(z))).mean(0)                  # [P, 1]
    theirs = (torch.softmax(w, dim=0).unsqueeze(0) * z).sum(1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), x)[0], torch.autograd.grad(theirs.sum(), x)[0],
                               atol=1e-5, rtol=1e-4)
    assert sorted(alpha) == ["complement-substitute", "substitute"] and beta.shape == (n, 2)
    torch.testing.assert_close(beta.sum(1), torch.ones(n))
    # On blocks of the meta-path graphs (a mini-batch of 10 seeds), with features per meta-path
    # (each block has its own sources): per-node semantic weights give the full graph's rows.
    layer.semantic.per_item = True
    seeds = torch.arange(10)
    blocks = {p: dgl.to_block(dgl.in_subgraph(g, seeds), seeds) for p, g in graphs.items()}
    batch = layer(blocks, {p: x[b.srcdata[dgl.NID]] for p, b in blocks.items()})
    torch.testing.assert_close(batch, layer(graphs, x)[:10], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"missing \['substitute'\]"):
        layer({("complement", "substitute"): graphs[paths[1]]}, x)
