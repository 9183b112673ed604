"""Fused edge softmax + weighted aggregation over CSR, in Triton, with its own backward.

One program per (row, head).  The forward pass streams a row's edges in blocks with an online
softmax (running max and sum, as in FlashAttention), so a hub row of any degree needs no more
than one block of memory, and the [E, H, D] messages are never written.  It saves the row's
log-sum-exp; the backward recomputes the attention from it.

* ``grad_logits[e] = alpha_e * (<grad_out[row], feat[src_e]> - <grad_out[row], out[row]>)``,
  one program per (row, head).
* ``grad_feat[n] = sum over n's out-edges of alpha_e * grad_out[row_e]``, one program per
  (source node, head) over the transposed CSR: no atomics, so results are deterministic.

The launches are registered as PyTorch operators (``torch.ops.mmsc_dgl.edge_softmax_aggregate``
and ``..._backward``, with fake-tensor shapes and an autograd kernel), so ``torch.compile``
keeps them as opaque graph nodes, with ``fullgraph=True`` too.

Runs on CUDA, and on CPU under ``TRITON_INTERPRET=1`` (used by the tests).  The kernels avoid
implicit dtype casts because Triton 2.2's interpreter cannot perform them: integer arrays are
passed as int32 when sizes allow (int64 otherwise), and float work stays in the input dtype
(float32 or float64; half inputs are computed in float32).
"""

import os

import torch
import triton
import triton.language as tl

from mmsc_dgl.ops.csr import CSR

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _forward_kernel(indptr, indices, logits, feat, out, lse, H, D,
                    BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0)
    h = tl.program_id(1)
    start = tl.load(indptr + row)
    end = tl.load(indptr + row + 1)
    offs_e = tl.arange(0, BLOCK_E)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = tl.expand_dims(offs_d < D, 0)
    m = tl.full([1], float("-inf"), ACC)
    s = tl.zeros([1], ACC)
    acc = tl.zeros([BLOCK_D], ACC)
    for e0 in range(start, end, BLOCK_E):
        e = e0 + offs_e
        emask = e < end
        src = tl.load(indices + e, mask=emask, other=0)
        logit = tl.load(logits + tl.expand_dims(e * H + h, 1), mask=tl.expand_dims(emask, 1),
                        other=float("-inf"))
        f = tl.load(feat + tl.expand_dims((src * H + h) * D, 1) + tl.expand_dims(offs_d, 0),
                    mask=tl.expand_dims(emask, 1) & dmask, other=0.0)
        m_new = tl.maximum(m, tl.max(logit, axis=0))
        scale = tl.exp(m - m_new)
        p = tl.exp(logit - tl.expand_dims(m_new, 0))
        acc = acc * scale + tl.sum(p * f, axis=0)
        s = s * scale + tl.sum(p, axis=0)
        m = m_new
    zero = tl.zeros([BLOCK_D], ACC)
    result = tl.where(s > tl.zeros([1], ACC), acc / s, zero)
    tl.store(out + (row * H + h) * D + offs_d, result, mask=offs_d < D)
    tl.store(lse + row * H + h + tl.arange(0, 1), m + tl.log(s))


@triton.jit
def _grad_logits_kernel(indptr, indices, logits, feat, out, lse, grad_out, grad_logits, H, D,
                        BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0)
    h = tl.program_id(1)
    start = tl.load(indptr + row)
    end = tl.load(indptr + row + 1)
    offs_e = tl.arange(0, BLOCK_E)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = tl.expand_dims(offs_d < D, 0)
    base = tl.expand_dims((row * H + h) * D + offs_d, 0)
    go = tl.load(grad_out + base, mask=dmask, other=0.0)           # [1, BLOCK_D]
    o = tl.load(out + base, mask=dmask, other=0.0)
    delta = tl.sum(go * o, axis=1)                                   # [1]
    row_lse = tl.load(lse + row * H + h + tl.arange(0, 1))           # [1]
    for e0 in range(start, end, BLOCK_E):
        e = e0 + offs_e
        emask = e < end
        src = tl.load(indices + e, mask=emask, other=0)
        logit = tl.load(logits + e * H + h, mask=emask, other=0.0)
        f = tl.load(feat + tl.expand_dims((src * H + h) * D, 1) + tl.expand_dims(offs_d, 0),
                    mask=tl.expand_dims(emask, 1) & dmask, other=0.0)
        grad_alpha = tl.sum(f * go, axis=1)                          # [BLOCK_E]
        alpha = tl.exp(logit - row_lse)
        tl.store(grad_logits + e * H + h, alpha * (grad_alpha - delta), mask=emask)


@triton.jit
def _grad_feat_kernel(t_indptr, t_rows, t_eids, logits, lse, grad_out, grad_feat, H, D,
                      BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    node = tl.program_id(0)
    h = tl.program_id(1)
    start = tl.load(t_indptr + node)
    end = tl.load(t_indptr + node + 1)
    offs_e = tl.arange(0, BLOCK_E)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = tl.expand_dims(offs_d < D, 0)
    acc = tl.zeros([BLOCK_D], ACC)
    for e0 in range(start, end, BLOCK_E):
        e = e0 + offs_e
        emask = e < end
        row = tl.load(t_rows + e, mask=emask, other=0)
        eid = tl.load(t_eids + e, mask=emask, other=0)
        logit = tl.load(logits + tl.expand_dims(eid * H + h, 1), mask=tl.expand_dims(emask, 1),
                        other=float("-inf"))
        row_lse = tl.load(lse + tl.expand_dims(row * H + h, 1), mask=tl.expand_dims(emask, 1), other=0.0)
        alpha = tl.exp(logit - row_lse)                              # [BLOCK_E, 1]
        go = tl.load(grad_out + tl.expand_dims((row * H + h) * D, 1) + tl.expand_dims(offs_d, 0),
                     mask=tl.expand_dims(emask, 1) & dmask, other=0.0)
        acc += tl.sum(alpha * go, axis=0)
    tl.store(grad_feat + (node * H + h) * D + offs_d, acc, mask=offs_d < D)


def _index_dtype(num_edges: int, num_rows: int, feat: torch.Tensor) -> torch.dtype:
    limit = 2**31 - 1
    biggest = max(num_edges * feat.shape[1], feat.numel(), num_rows * feat.shape[1] * feat.shape[2])
    return torch.int32 if biggest < limit else torch.int64


def _blocks(dim: int):
    block_d = max(triton.next_power_of_2(dim), 2)
    block_e = 16 if INTERPRET else (64 if block_d <= 32 else 32)
    return block_e, block_d


def _forward(indptr: torch.Tensor, indices: torch.Tensor, logits: torch.Tensor, feat: torch.Tensor):
    """``(out [R, H, D], lse [R, H])``: the kernel launch behind the ``mmsc_dgl::edge_softmax_aggregate``
    op (its CPU and CUDA implementation)."""
    num_rows, (heads, dim) = indptr.shape[0] - 1, feat.shape[1:]
    idx = _index_dtype(indices.shape[0], num_rows, feat)
    out = torch.empty((num_rows, heads, dim), dtype=feat.dtype, device=feat.device)
    lse = torch.empty((num_rows, heads), dtype=feat.dtype, device=feat.device)
    block_e, block_d = _blocks(dim)
    acc = tl.float64 if feat.dtype == torch.float64 else tl.float32
    if num_rows and heads:
        _forward_kernel[(num_rows, heads)](indptr.to(idx), indices.to(idx), logits, feat, out, lse, heads, dim,
                                           BLOCK_E=block_e, BLOCK_D=block_d, ACC=acc)
    return out, lse


def _backward(indptr, indices, t_indptr, t_rows, t_eids, logits, feat, out, lse, grad_out,
              need_logits: bool, need_feat: bool):
    """``(grad_logits, grad_feat)`` (an empty tensor for one not needed): the
    ``mmsc_dgl::edge_softmax_aggregate_backward`` op."""
    grad_out = grad_out.contiguous()
    num_rows, num_src, (heads, dim) = indptr.shape[0] - 1, feat.shape[0], feat.shape[1:]
    idx = _index_dtype(indices.shape[0], num_rows, feat)
    block_e, block_d = _blocks(dim)
    acc = tl.float64 if feat.dtype == torch.float64 else tl.float32
    grad_logits = grad_feat = logits.new_empty(0)
    if need_logits:
        grad_logits = torch.zeros_like(logits)
        if num_rows and heads:
            _grad_logits_kernel[(num_rows, heads)](
                indptr.to(idx), indices.to(idx), logits, feat, out, lse, grad_out, grad_logits,
                heads, dim, BLOCK_E=block_e, BLOCK_D=block_d, ACC=acc)
    if need_feat:
        grad_feat = torch.empty_like(feat)
        if num_src and heads:
            _grad_feat_kernel[(num_src, heads)](
                t_indptr.to(idx), t_rows.to(idx), t_eids.to(idx), logits, lse, grad_out, grad_feat,
                heads, dim, BLOCK_E=block_e, BLOCK_D=block_d, ACC=acc)
    return grad_logits, grad_feat


class _FusedEdgeSoftmaxAggregate(torch.autograd.Function):
    """The op's autograd: forward below autograd (the kernel), backward as the second op."""

    @staticmethod
    def forward(ctx, indptr, indices, t_indptr, t_rows, t_eids, logits, feat):
        with torch._C._AutoDispatchBelowAutograd():
            out, lse = torch.ops.mmsc_dgl.edge_softmax_aggregate(indptr, indices, t_indptr, t_rows, t_eids,
                                                                logits, feat)
        ctx.save_for_backward(indptr, indices, t_indptr, t_rows, t_eids, logits, feat, out, lse)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _grad_lse):
        need_logits, need_feat = ctx.needs_input_grad[5], ctx.needs_input_grad[6]
        grad_logits, grad_feat = torch.ops.mmsc_dgl.edge_softmax_aggregate_backward(
            *ctx.saved_tensors, grad_out.contiguous(), need_logits, need_feat)
        return (None,) * 5 + (grad_logits if need_logits else None, grad_feat if need_feat else None)


def _register_ops() -> torch.library.Library:
    """The kernel as two PyTorch operators, ``torch.ops.mmsc_dgl.edge_softmax_aggregate`` and its
    ``_backward``, with shape functions (fake tensors) and autograd: ``torch.compile`` (also with
    ``fullgraph=True``) keeps them as opaque nodes of its graph, whatever the torch version's
    support for user-defined Triton kernels, and AOTAutograd finds the backward through them."""
    # Imported here, not while dynamo traces: torch 2.2 imports it lazily from inside a trace,
    # where its own registration fails ("'function' object has no attribute 'endswith'").
    try:
        import torch.distributed._functional_collectives  # noqa: F401
    except ImportError:  # a torch built without distributed support
        pass
    lib = torch.library.Library("mmsc_dgl", "DEF")
    lib.define("edge_softmax_aggregate(Tensor indptr, Tensor indices, Tensor t_indptr, Tensor t_rows, "
               "Tensor t_eids, Tensor logits, Tensor feat) -> (Tensor, Tensor)")
    lib.define("edge_softmax_aggregate_backward(Tensor indptr, Tensor indices, Tensor t_indptr, Tensor t_rows, "
               "Tensor t_eids, Tensor logits, Tensor feat, Tensor out, Tensor lse, Tensor grad_out, "
               "bool need_logits, bool need_feat) -> (Tensor, Tensor)")

    def forward(indptr, indices, t_indptr, t_rows, t_eids, logits, feat):
        return _forward(indptr, indices, logits, feat)

    def fake_forward(indptr, indices, t_indptr, t_rows, t_eids, logits, feat):
        rows = indptr.shape[0] - 1
        return (feat.new_empty((rows, feat.shape[1], feat.shape[2])), feat.new_empty((rows, feat.shape[1])))

    def fake_backward(indptr, indices, t_indptr, t_rows, t_eids, logits, feat, out, lse, grad_out,
                      need_logits, need_feat):
        return (torch.empty_like(logits) if need_logits else logits.new_empty(0),
                torch.empty_like(feat) if need_feat else logits.new_empty(0))

    for key in ("CPU", "CUDA"):
        lib.impl("edge_softmax_aggregate", forward, key)
        lib.impl("edge_softmax_aggregate_backward", _backward, key)
    lib.impl("edge_softmax_aggregate", lambda *args: _FusedEdgeSoftmaxAggregate.apply(*args), "Autograd")
    register_fake = getattr(torch.library, "register_fake", None) or torch.library.impl_abstract
    register_fake("mmsc_dgl::edge_softmax_aggregate", fake_forward, lib=lib)
    register_fake("mmsc_dgl::edge_softmax_aggregate_backward", fake_backward, lib=lib)
    return lib


_LIBRARY = _register_ops()


def edge_softmax_aggregate(csr: CSR, logits: torch.Tensor, feat: torch.Tensor,
                           return_attention: bool = False):
    """Triton implementation; same contract as :func:`mmsc_dgl.ops.reference.edge_softmax_aggregate`."""
    dtype = feat.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    t_indptr, t_rows, t_eids = csr.transpose()
    out, lse = torch.ops.mmsc_dgl.edge_softmax_aggregate(csr.indptr, csr.indices, t_indptr, t_rows, t_eids,
                                                         logits.to(work).contiguous(), feat.to(work).contiguous())
    out = out.to(dtype)
    if not return_attention:
        return out
    with torch.no_grad():
        alpha = torch.exp(logits.to(work) - lse[csr.row_ids()]).to(logits.dtype)
    return out, alpha
