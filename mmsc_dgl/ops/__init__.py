"""Message-passing kernels over plain CSR tensors.  No DGL at import time.

:func:`edge_softmax_aggregate` is the one entry point; it dispatches to

* ``"reference"``: torch scatter ops, CPU and CUDA, autograd by torch (the slow, obvious one);
* ``"dgl"``: DGL's CPU kernels (``edge_softmax`` + ``u_mul_e_sum``), imported on first use;
* ``"triton"``: a fused Triton kernel with its own backward, for CUDA (and CPU under
  ``TRITON_INTERPRET=1``, for tests).
"""
from __future__ import annotations

import importlib
import os
import sys

from typing import Optional

import torch

from mmsc_dgl.ops.csr import CSR, is_compiling, as_csr

IMPLEMENTATIONS = ("reference", "dgl", "triton")

__all__ = ["CSR", "as_csr", "IMPLEMENTATIONS", "edge_softmax_aggregate", "triton_available", "default_impl"]


def _assume_constant(fn):
    """``torch.compiler.assume_constant_result`` without importing dynamo with this package.

    The public decorator imports ``torch._dynamo`` (with sympy and, where installed,
    transformers: over a second of every process start) only to set one attribute on ``fn``.
    Where dynamo is already loaded the public decorator is used; otherwise the same attribute
    is set here, and ``tests/test_ops.py`` checks that it is what the installed torch's decorator
    sets, so a torch that changes it fails a test instead of silently tracing differently."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant
def _importable(name: str) -> bool:
    """Whether ``name`` imports (it is imported, once); under ``torch.compile`` this runs while
    tracing and its answer is a constant of the graph, so the dispatch below traces."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@_assume_constant
def _triton_runs_on(device_type: str) -> bool:
    return _importable("triton") and (os.environ.get("TRITON_INTERPRET") == "1" or device_type == "cuda")


def triton_available(device: torch.device | str | None = None) -> bool:
    """Whether the Triton kernel can run on ``device`` (CUDA, or any device when interpreted)."""
    return _triton_runs_on(torch.device(device).type if device is not None else "")


def default_impl(device: torch.device | str) -> str:
    """``triton`` on CUDA when Triton is importable, otherwise ``reference``."""
    device = torch.device(device)
    return "triton" if device.type == "cuda" and triton_available(device) else "reference"


def _kernel_module(impl: str):
    # Imported by _importable (eagerly, also under compile: its answer is a constant of the
    # trace), then read from sys.modules.
    import sys
    name = {"reference": "mmsc_dgl.ops.reference", "dgl": "mmsc_dgl.ops.dgl_kernels",
            "triton": "mmsc_dgl.ops.triton_kernel"}[impl]
    if not _importable(name):
        raise ImportError(f"cannot import {name}")
    return sys.modules[name]


def edge_softmax_aggregate(csr: CSR, logits: torch.Tensor, feat: torch.Tensor, impl: str = "auto",
                           return_attention: bool = False, edge_weight: Optional[torch.Tensor] = None):
    r"""Fused edge softmax and weighted aggregation over the rows of ``csr``.

    .. math::
        \alpha_{e,h} = \frac{\exp(s_{e,h})}{\sum_{e' \in \mathcal{E}(i)} \exp(s_{e',h})},
        \qquad
        o_{i,h} = \sum_{e \in \mathcal{E}(i)} \alpha_{e,h}\, x_{\mathrm{src}(e),h}

    Args:
        csr: adjacency; row ``i`` aggregates over its edges ``indptr[i]:indptr[i+1]``.
        logits: attention logits ``s`` [E, H].
        feat: source features ``x`` [num_src, H, D].
        impl: ``"auto"`` (Triton on CUDA, else the reference), ``"reference"``, ``"dgl"``
            or ``"triton"``.
        return_attention: also return ``alpha`` [E, H].
        edge_weight: [E] weights multiplied into the normalised attention (``GATConv``'s
            ``edge_weight``), in CSR edge order.  The fused kernels have none: with weights the
            reference runs, whatever ``impl`` says.

    Returns:
        ``out`` [num_rows, H, D]; rows without edges are exactly zero (see ``csr.nonempty``).

    Example:
        >>> csr = CSR(torch.tensor([0, 2, 2]), torch.tensor([0, 1]))
        >>> out = edge_softmax_aggregate(csr, torch.zeros(2, 1), torch.tensor([[[1.0]], [[3.0]]]))
        >>> out[:, 0, 0].tolist()
        [2.0, 0.0]
    """
    if logits.dim() != 2 or logits.shape[0] != csr.num_edges:
        raise ValueError(f"logits must be [num_edges={csr.num_edges}, heads], got {tuple(logits.shape)}")
    if feat.dim() != 3 or feat.shape[0] != csr.num_src or feat.shape[1] != logits.shape[1]:
        raise ValueError(f"feat must be [num_src={csr.num_src}, heads={logits.shape[1]}, dim], "
                         f"got {tuple(feat.shape)}")
    if not (csr.device == logits.device == feat.device):
        raise ValueError(f"csr ({csr.device}), logits ({logits.device}) and feat ({feat.device}) "
                         "must be on one device; move them with .to(device)")
    if edge_weight is not None and edge_weight.shape != (csr.num_edges,):
        raise ValueError(f"edge_weight must be [num_edges={csr.num_edges}], got {tuple(edge_weight.shape)}")
    if impl == "auto":
        impl = default_impl(feat.device)
    if edge_weight is not None:
        impl = "reference"
    if impl == "dgl" and is_compiling():
        # DGL's kernels take DGL graphs, C objects dynamo cannot trace; the reference computes the
        # same (tested to 1e-5) and traces.
        impl = "reference"
    if impl == "reference":
        module = _kernel_module("reference")
    elif impl == "dgl":
        if feat.device.type != "cpu":
            raise ValueError("impl='dgl' runs on CPU only (PyPI DGL has no CUDA); use 'triton' or 'reference'")
        module = _kernel_module("dgl")
    elif impl == "triton":
        if not triton_available(feat.device):
            raise RuntimeError("impl='triton' needs Triton and a CUDA device (or TRITON_INTERPRET=1 for "
                               "testing on CPU); use impl='reference'")
        module = _kernel_module("triton")
    else:
        raise ValueError(f"unknown impl {impl!r}; choose one of auto, {', '.join(IMPLEMENTATIONS)}")
    extra = {} if edge_weight is None else {"edge_weight": edge_weight}
    wide = (torch.float32, torch.float64)
    if logits.dtype == feat.dtype and feat.dtype in wide:
        return module.edge_softmax_aggregate(csr, logits, feat, return_attention=return_attention, **extra)
    # Mixed or half precision (torch.autocast gives a bf16 projection and f32 logits): every
    # kernel runs in float32 (float64 if either is), as autocast runs softmax; ``out`` comes back
    # in ``feat``'s dtype and the attention in ``logits``'s.
    common = torch.float64 if torch.float64 in (logits.dtype, feat.dtype) else torch.float32
    result = module.edge_softmax_aggregate(csr, logits.to(common), feat.to(common), return_attention=return_attention,
                                           **extra)
    if return_attention:
        out, attention = result
        return out.to(feat.dtype), attention.to(logits.dtype)
    return result.to(feat.dtype)
