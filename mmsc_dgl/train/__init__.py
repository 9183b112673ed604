"""The training harness: mini-batches, checkpoints, the trainer, assembling a run's parts and
the cold-start tower fit after training.  No DGL here.  Run directories (train into one, load
it, query it) are the floor above, :mod:`mmsc_dgl.runs`.

``mmsc_dgl.train`` is both this package and the function :func:`mmsc_dgl.train
<mmsc_dgl.runs.training.train>`: once a submodule is imported, Python binds the package to the
name ``train`` on ``mmsc_dgl``, which would hide the function; so the package root makes this
package callable, calling the function.
"""
