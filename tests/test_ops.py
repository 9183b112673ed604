"""Every kernel implementation against the slow, obvious reference: values and gradients."""
import warnings

import pytest
import torch

from mmsc_dgl.ops import CSR, edge_softmax_aggregate, triton_available
from mmsc_dgl.ops import reference

IMPLS = ["dgl", "triton"]


def _graph(case: str, num_src: int = 30):
    g = torch.Generator().manual_seed(7)
    if case == "random":
        dst = torch.randint(0, 25, (200,), generator=g)
        src = torch.randint(0, num_src, (200,), generator=g)
        return CSR.from_edges(dst, src, 25, num_src)
    if case == "zero_degree":  # rows 0, 3 and the last have no edges
        dst = torch.tensor([1, 1, 2, 4, 4, 4, 5])
        src = torch.tensor([0, 3, 7, 1, 2, 9, 5])
        return CSR.from_edges(dst, src, 7, num_src)
    if case == "single_edge":
        return CSR.from_edges(torch.tensor([2]), torch.tensor([4]), 3, num_src)
    if case == "hub":  # one row of 2,000 edges (125 edge blocks in the interpreter, 32 on a GPU), a few small rows
        dst = torch.cat([torch.zeros(2_000, dtype=torch.long), torch.tensor([1, 2, 2])])
        src = torch.cat([torch.randint(0, num_src, (2_000,), generator=g), torch.tensor([3, 4, 5])])
        return CSR.from_edges(dst, src, 4, num_src)
    if case == "no_edges":
        return CSR(torch.zeros(4, dtype=torch.long), torch.zeros(0, dtype=torch.long), num_src)
    raise ValueError(case)


def _inputs(csr, heads, dim, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(csr.num_edges, heads, generator=g) * 2).to(dtype).to(device).requires_grad_()
    feat = torch.randn(csr.num_src, heads, dim, generator=g).to(dtype).to(device).requires_grad_()
    return logits, feat


def _device_for(impl) -> str:
    """Where a case runs: on CUDA for Triton on a GPU host (no interpreter there, so Triton cannot
    take CPU tensors and the value and gradient grid would otherwise skip), else on the CPU."""
    if impl == "triton" and not triton_available("cpu") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _skip_unavailable(impl):
    if impl == "triton" and not triton_available(_device_for(impl)):
        pytest.skip("Triton cannot run here (needs CUDA or TRITON_INTERPRET=1)")
    if impl == "dgl":
        pytest.importorskip("dgl")


def test_reference_is_obvious():
    """The reference against a hand-written loop."""
    csr = _graph("zero_degree")
    logits, feat = _inputs(csr, 2, 3, torch.float64)
    out, alpha = reference.edge_softmax_aggregate(csr, logits, feat, return_attention=True)
    for row in range(csr.num_rows):
        lo, hi = int(csr.indptr[row]), int(csr.indptr[row + 1])
        if lo == hi:
            assert torch.all(out[row] == 0)
            continue
        a = torch.softmax(logits[lo:hi], dim=0)
        assert torch.allclose(alpha[lo:hi], a)
        expect = (a.unsqueeze(-1) * feat[csr.indices[lo:hi]]).sum(0)
        assert torch.allclose(out[row], expect)


@pytest.mark.parametrize("case", ["random", "zero_degree", "single_edge", "no_edges"])
def test_reference_gradcheck(case):
    csr = _graph(case)
    logits, feat = _inputs(csr, 2, 3, torch.float64)
    assert torch.autograd.gradcheck(lambda l, f: reference.edge_softmax_aggregate(csr, l, f), (logits, feat))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["random", "zero_degree", "single_edge", "hub", "no_edges"])
@pytest.mark.parametrize("heads", [1, 4, 8])
def test_matches_reference_values_and_gradients(impl, case, heads):
    _skip_unavailable(impl)
    dim = 5 if case != "hub" else 8
    device = _device_for(impl)
    csr = _graph(case).to(device)
    logits, feat = _inputs(csr, heads, dim, torch.float32, seed=heads, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # interpreter: 0/0 on empty rows, masked out
        out, alpha = edge_softmax_aggregate(csr, logits, feat, impl=impl, return_attention=True)
    ref_out, ref_alpha = reference.edge_softmax_aggregate(csr, logits, feat, return_attention=True)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(ref_out)
    got = torch.autograd.grad(out, (logits, feat), grad, allow_unused=True)
    want = torch.autograd.grad(ref_out, (logits, feat), grad, allow_unused=True)
    for g_got, g_want in zip(got, want):
        g_got = torch.zeros_like(g_want) if g_got is None and g_want is not None else g_got
        if g_want is None:
            continue
        torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)


def test_dgl_gradcheck_float64():
    pytest.importorskip("dgl")
    csr = _graph("zero_degree")
    logits, feat = _inputs(csr, 4, 3, torch.float64)
    assert torch.autograd.gradcheck(lambda l, f: edge_softmax_aggregate(csr, l, f, impl="dgl"), (logits, feat))


def test_triton_gradcheck_float64_on_cuda():
    """Triton 2.2's interpreter has no float64 constants, so float64 gradcheck of the Triton
    kernel runs where a GPU is (benchmarks/gpu_bench.sh runs this file there)."""
    if not torch.cuda.is_available():
        pytest.skip("float64 Triton needs CUDA: the Triton 2.2 interpreter cannot build float64 constants")
    csr = _graph("zero_degree").to("cuda")
    logits, feat = _inputs(csr, 4, 3, torch.float64)
    logits = logits.detach().cuda().requires_grad_()
    feat = feat.detach().cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda l, f: edge_softmax_aggregate(csr, l, f, impl="triton"), (logits, feat))


def test_triton_matches_reference_on_cuda_float32():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    csr = _graph("hub").to("cuda")
    logits, feat = _inputs(csr, 4, 64, torch.float32)
    logits = logits.detach().cuda().requires_grad_()
    feat = feat.detach().cuda().requires_grad_()
    out = edge_softmax_aggregate(csr, logits, feat)  # auto picks triton on CUDA
    ref = reference.edge_softmax_aggregate(csr, logits, feat)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
def test_every_kernel_takes_mixed_and_half_precision(impl):
    """Issue 30.2: under torch.autocast a layer hands the kernel bf16 features and f32 logits; each
    kernel runs in float32 and returns ``out`` in the features' dtype, the attention in the logits'."""
    _skip_unavailable(impl)
    device = _device_for(impl)
    csr = _graph("random").to(device)
    logits, feat = _inputs(csr, 2, 4, torch.float32, device=device)
    logits, feat = logits.detach(), feat.detach()
    want, want_alpha = edge_softmax_aggregate(csr, logits, feat, impl="reference", return_attention=True)
    for dtype in (torch.bfloat16, torch.float16):
        out, alpha = edge_softmax_aggregate(csr, logits, feat.to(dtype), impl=impl, return_attention=True)
        assert out.dtype == dtype and alpha.dtype == torch.float32
        torch.testing.assert_close(out.float(), want, atol=0.03, rtol=0.03)
        torch.testing.assert_close(alpha, want_alpha, atol=1e-5, rtol=1e-5)
        both = edge_softmax_aggregate(csr, logits.to(dtype), feat.to(dtype), impl=impl)
        assert both.dtype == dtype
        torch.testing.assert_close(both.float(), want, atol=0.05, rtol=0.05)


def test_validation_errors():
    csr = _graph("random")
    logits, feat = _inputs(csr, 2, 3, torch.float32)
    with pytest.raises(ValueError, match="logits must be"):
        edge_softmax_aggregate(csr, logits[:5], feat)
    with pytest.raises(ValueError, match="feat must be"):
        edge_softmax_aggregate(csr, logits, feat[:, :1])
    with pytest.raises(ValueError, match="unknown impl"):
        edge_softmax_aggregate(csr, logits, feat, impl="magic")
    with pytest.raises(ValueError, match="indptr must start at 0"):
        CSR(torch.tensor([1, 2]), torch.tensor([0]))


def test_ops_do_not_import_dgl_or_triton():
    import subprocess
    import sys
    code = ("import sys, torch; import mmsc_dgl.ops, mmsc_dgl.nn, mmsc_dgl.metapath;"
            "from mmsc_dgl.ops import CSR, edge_softmax_aggregate;"
            "c = CSR(torch.tensor([0, 1]), torch.tensor([0]));"
            "edge_softmax_aggregate(c, torch.zeros(1, 1), torch.ones(1, 1, 2), impl='reference');"
            "bad = [m for m in ('dgl', 'triton') if m in sys.modules]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_process_start_loads_neither_dynamo_nor_scikit_learn():
    """Every CLI call, DistDGL server and trainer starts a process: the trainer and the CLI
    import without torch._dynamo (sympy, transformers) and scikit-learn (scipy.stats), which
    cost seconds per start and are loaded where they are used."""
    import subprocess
    import sys
    for needed in ("pydantic", "pyarrow", "click"):  # the CLI's stack; GPU hosts carry only torch
        pytest.importorskip(needed)
    code = ("import sys, mmsc_dgl.runs.training, mmsc_dgl.runs.query, mmsc_dgl.cli;"
            "bad = [m for m in ('torch._dynamo', 'sklearn', 'scipy.stats') if m in sys.modules]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_constant_mark_is_the_one_torch_sets():
    """``ops._assume_constant`` sets by hand what ``torch.compiler.assume_constant_result`` sets
    (so that importing ops does not import dynamo); if torch changes its mark, this fails."""
    import subprocess
    import sys
    code = ("import sys, torch, mmsc_dgl.ops as ops; assert 'torch._dynamo' not in sys.modules;"
            "by_hand = [dict(vars(ops._importable)), dict(vars(ops._triton_runs_on))];"
            "f = torch.compiler.assume_constant_result(lambda: True);"
            "assert by_hand == [vars(f), vars(f)] == [{'_dynamo_marked_constant': True}] * 2, (by_hand, vars(f))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_transpose_and_rows():
    csr = _graph("zero_degree")
    t_indptr, t_rows, t_eids = csr.transpose()
    assert torch.equal(csr.indices[t_eids], torch.repeat_interleave(torch.arange(csr.num_src), t_indptr.diff()))
    assert torch.equal(csr.row_ids()[t_eids], t_rows)
    assert repr(csr) == "CSR(rows=7, src=30, edges=7)"


@pytest.mark.parametrize("num_items,k", [(50, 10), (500, 10), (0, 0)])
def test_candidate_dot_matches_the_gathered_product(num_items, k, monkeypatch):
    """Both ways (the full product for a small catalog, chunked into several row blocks here;
    the gathered rows for a large one) give the obvious gathered einsum's values and gradients."""
    from mmsc_dgl.ops import candidates
    monkeypatch.setattr(candidates, "FULL_PRODUCT_CELLS", 7 * max(num_items, 1))  # 7 rows a block
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(max(num_items, 1), 8, generator=g, dtype=torch.float64, requires_grad=True)
    src = torch.randint(0, max(num_items, 1), (23,), generator=g)
    cand = torch.randint(0, max(num_items, 1), (23, k), generator=g)
    want = (emb[src].unsqueeze(1) * emb[cand]).sum(-1)
    got = candidates.candidate_dot(emb, src, cand)
    torch.testing.assert_close(got, want)
    if k:
        weights = torch.randn(want.shape, generator=g, dtype=torch.float64)
        torch.testing.assert_close(torch.autograd.grad((got * weights).sum(), emb)[0],
                                   torch.autograd.grad((want * weights).sum(), emb)[0])
        full = num_items <= candidates.FULL_PRODUCT_RATIO * k
        assert full == (num_items == 50)
        # against other target rows (a signature's emb * sign): the gathered product, values and gradients
        sign = torch.where(torch.arange(8) < 5, 1.0, -1.0).double()
        want = (emb[src].unsqueeze(1) * (emb * sign)[cand]).sum(-1)
        got = candidates.candidate_dot(emb, src, cand, emb * sign)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.autograd.grad((got * weights).sum(), emb)[0],
                                   torch.autograd.grad((want * weights).sum(), emb)[0])
