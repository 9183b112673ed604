"""E_LLM: judging training edges and keeping a clean subset for the supervised loss.  No DGL.

``mmsc_dgl.augment`` is both this package and the function :func:`~mmsc_dgl.augment.select.augment`
(Python binds the package to the name once a submodule is imported), so the package is callable.
"""
import sys
import types

from mmsc_dgl.augment.judge import EdgeJudge
from mmsc_dgl.augment.select import augment as _augment

__all__ = ["EdgeJudge", "augment"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return _augment(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
augment = _augment
