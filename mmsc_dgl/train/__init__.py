"""Losses, graph-dropout views, checkpoints and the trainer.  No DGL here.

``mmsc_dgl.train`` is both this package and the function :func:`mmsc_dgl.train.run.train`: once
a submodule is imported, Python binds the package to the name ``train`` on ``mmsc_dgl``, which
would hide the function; so the package itself is callable and calls it.
"""
import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from mmsc_dgl.train.run import train
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
