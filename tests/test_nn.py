import copy
import io
import pickle

import pytest
import torch
from torch.nn import functional as F

from mmsc_dgl.nn import MetaPathAttention, MultiModalAttention, NeuralGate, SemanticAttention
from mmsc_dgl.ops import CSR, triton_available


def _csr(case):
    if case == "homogeneous":
        return CSR.from_edges(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([1, 2, 0, 0, 1, 3]), 4)
    if case == "zero_degree":
        return CSR.from_edges(torch.tensor([0, 2]), torch.tensor([1, 3]), 4)
    if case == "bipartite":  # 3 rows aggregate from 5 sources
        return CSR.from_edges(torch.tensor([0, 0, 1, 2]), torch.tensor([4, 1, 3, 0]), 3, 5)
    raise ValueError(case)


@pytest.mark.parametrize("case", ["homogeneous", "zero_degree", "bipartite"])
@pytest.mark.parametrize("heads", [1, 4])
def test_metapath_attention_shapes_and_empty_rows(case, heads):
    torch.manual_seed(0)
    csr = _csr(case)
    layer = MetaPathAttention(6, 3, num_heads=heads, residual=True, activation=F.elu)
    feat = torch.randn(csr.num_src, 6)
    x = (feat, torch.randn(csr.num_rows, 6)) if case == "bipartite" else feat
    out, attn = layer(csr, x, get_attention=True)
    assert out.shape == (csr.num_rows, heads, 3)
    assert attn.shape == (csr.num_edges, heads)
    # Empty rows are exactly zero (no bias, residual or activation of a bias).
    assert torch.all(out[~csr.nonempty] == 0)
    # Attention sums to one per non-empty row and head.
    sums = torch.zeros(csr.num_rows, heads).index_add(0, csr.row_ids(), attn)
    assert torch.allclose(sums[csr.nonempty], torch.ones_like(sums[csr.nonempty]))
    out.sum().backward()
    assert layer.fc.weight.grad is not None and layer.attn_l.grad is not None


def test_metapath_attention_matches_a_dense_gat():
    """Against a direct per-row computation of the GAT formula."""
    torch.manual_seed(1)
    csr = _csr("homogeneous")
    layer = MetaPathAttention(5, 2, num_heads=2, negative_slope=0.2, bias=False)
    x = torch.randn(4, 5)
    out = layer(csr, x)
    z = layer.fc(x).view(4, 2, 2)
    for i in range(4):
        nbrs = csr.indices[csr.indptr[i]:csr.indptr[i + 1]]
        if len(nbrs) == 0:
            continue
        s = F.leaky_relu((z[nbrs] * layer.attn_l).sum(-1) + (z[i] * layer.attn_r).sum(-1), 0.2)
        a = torch.softmax(s, 0)
        torch.testing.assert_close(out[i], (a.unsqueeze(-1) * z[nbrs]).sum(0))


@pytest.mark.parametrize("impl", ["dgl", "triton"])
def test_metapath_attention_impls_agree(impl):
    if impl == "triton" and not triton_available("cpu"):
        pytest.skip("Triton cannot run here")
    if impl == "dgl":
        pytest.importorskip("dgl")
    torch.manual_seed(2)
    csr = _csr("zero_degree")
    ref = MetaPathAttention(6, 4, num_heads=2, impl="reference")
    other = copy.deepcopy(ref)
    other.impl = impl
    x = torch.randn(4, 6)
    torch.testing.assert_close(other(csr, x), ref(csr, x), rtol=1e-5, atol=1e-6)


def test_reprs_state_dict_and_pickle():
    layers = [MetaPathAttention(16, 8, num_heads=2), SemanticAttention(16), MultiModalAttention(32, 16),
              NeuralGate(8), MetaPathAttention(4, 4, bias=False, residual=True)]
    assert repr(layers[0]) == "MetaPathAttention(16, 8, heads=2, impl='auto')"
    assert repr(layers[1]) == "SemanticAttention(16, hidden=128)"
    assert repr(layers[2]) == "MultiModalAttention(32, 16, hidden=128)"
    assert repr(layers[3]) == "NeuralGate(8)"
    assert repr(layers[4]) == "MetaPathAttention(4, 4, heads=1, residual=True, impl='auto')"
    # Optional parts are registered as None, so keys are stable.
    assert "bias" not in dict(layers[4].named_parameters()) and layers[4].bias is None
    for layer in layers:
        clone = pickle.loads(pickle.dumps(layer))
        assert clone.state_dict().keys() == layer.state_dict().keys()
        buffer = io.BytesIO()
        torch.save(layer.state_dict(), buffer)
        buffer.seek(0)
        layer.load_state_dict(torch.load(buffer, weights_only=True))
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        layer.reset_parameters()
        assert any(not torch.equal(before[k], v) for k, v in layer.state_dict().items() if v.numel() > 1)


def test_semantic_attention_masks_and_weights():
    torch.manual_seed(3)
    layer = SemanticAttention(8, hidden_feats=16)
    z = torch.randn(4, 3, 8)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0], [0, 1, 1]], dtype=torch.bool)
    out, beta = layer(z, mask, get_attention=True)
    assert torch.allclose(beta.sum(1), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert torch.all(beta[~mask] == 0)
    assert torch.allclose(out[1], z[1, 0]) and torch.all(out[2] == 0)
    # Without a mask: one global weight vector shared by every item, as in HAN.
    _, beta_all = layer(z, get_attention=True)
    assert torch.allclose(beta_all, beta_all[0].expand_as(beta_all))
    out.sum().backward()
    # Item-specific weights: an item's output is the same alone or in a batch.
    per_item = SemanticAttention(8, hidden_feats=16, per_item=True)
    full, beta_items = per_item(z, mask, get_attention=True)
    alone = per_item(z[:1], mask[:1])
    torch.testing.assert_close(full[:1], alone)
    assert torch.allclose(beta_items.sum(1), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert repr(per_item) == "SemanticAttention(8, hidden=16, per_item=True)"


def test_multimodal_attention_single_token_and_masks():
    torch.manual_seed(4)
    layer = MultiModalAttention(6, 4, hidden_feats=8)
    one = torch.randn(3, 6)
    q1, g1 = layer(one, get_attention=True)
    assert torch.allclose(g1, torch.ones(3, 1))
    torch.testing.assert_close(q1, layer.out(one))
    tokens = torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    q, g = layer(tokens, mask, get_attention=True)
    assert torch.all(g[0, 2:] == 0) and abs(g[0].sum().item() - 1) < 1e-6
    assert torch.all(q[1] == 0) and torch.all(g[1] == 0)
    # Padding tokens do not change the result.
    q_short = layer(tokens[:1, :2])
    torch.testing.assert_close(q[:1], q_short)


def test_neural_gate_mixes_and_falls_back():
    torch.manual_seed(5)
    gate = NeuralGate(4)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    h, g = gate(a, b, get_gate=True)
    assert torch.all((g > 0) & (g < 1))
    torch.testing.assert_close(h, g * a + (1 - g) * b)
    mask = torch.tensor([True, False, True, False, True])
    h2 = gate(a, b, mask_b=mask)
    torch.testing.assert_close(h2[~mask], a[~mask])
    with pytest.raises(ValueError, match="must have one shape"):
        gate(a, b[:, :2])


def test_layer_doctests():
    import doctest

    import mmsc_dgl.nn.fusion
    import mmsc_dgl.nn.gate
    import mmsc_dgl.nn.metapath_attention
    import mmsc_dgl.nn.multimodal_attention
    import mmsc_dgl.nn.semantic_attention
    import mmsc_dgl.ops
    import mmsc_dgl.ops.csr
    import mmsc_dgl.ops.sparse
    from importlib.util import find_spec
    modules = [mmsc_dgl.nn.gate, mmsc_dgl.nn.fusion, mmsc_dgl.nn.metapath_attention, mmsc_dgl.nn.multimodal_attention,
               mmsc_dgl.nn.semantic_attention, mmsc_dgl.ops, mmsc_dgl.ops.sparse]
    if find_spec("dgl") is not None:  # CSR.from_dgl's example builds a DGL graph (GPU hosts have no DGL)
        modules.append(mmsc_dgl.ops.csr)
    for module in modules:
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


@pytest.mark.parametrize("case", ["homogeneous", "zero_degree", "bipartite"])
def test_triton_kernel_under_torch_compile_fullgraph(case):
    """The Triton kernel is an opaque PyTorch operator (``torch.ops.mmsc_dgl.edge_softmax_aggregate``,
    with fake shapes and autograd): ``torch.compile(fullgraph=True)`` traces the layer around it,
    and values and gradients equal the eager reference kernel's.  Runs on CUDA, or on CPU with the
    Triton interpreter (TRITON_INTERPRET=1, set by conftest)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not triton_available(device):
        pytest.skip("Triton cannot run here (needs CUDA or TRITON_INTERPRET=1)")
    torch._dynamo.reset()
    torch.manual_seed(5)
    csr = _csr(case).to(device)
    layer = MetaPathAttention(6, 3, num_heads=2, activation=F.elu, impl="triton").to(device)
    feat = torch.randn(csr.num_src, 6, device=device)
    x = (feat, torch.randn(csr.num_rows, 6, device=device)) if case == "bipartite" else feat
    ref = copy.deepcopy(layer)
    ref.impl = "reference"
    compiled = torch.compile(layer, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    out = compiled(csr, x)
    want = ref(csr, x)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)
    out.square().sum().backward()
    want.square().sum().backward()
    for (name, got), (_, exp) in zip(layer.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(got.grad, exp.grad, atol=1e-5, rtol=1e-4, msg=name)
