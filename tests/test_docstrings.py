"""The examples in the public API's docstrings run (the ones not marked as needing a trained run
or a dataset on disk)."""
import doctest
import importlib

import pytest

pytest.importorskip("dgl")

RUNNABLE = ["mmsc_dgl.config", "mmsc_dgl.data.node_features", "mmsc_dgl.data.prepare", "mmsc_dgl.eval.evaluate",
            "mmsc_dgl.features.base", "mmsc_dgl.metapath.spec", "mmsc_dgl.metapath.build",
            "mmsc_dgl.train.item_model"]
SKIPPED_ONLY = ["mmsc_dgl.train.run", "mmsc_dgl.data.dataset", "mmsc_dgl.experiments.config"]


@pytest.mark.parametrize("name", RUNNABLE + SKIPPED_ONLY)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"mmsc_dgl": importlib.import_module("mmsc_dgl")})
    assert result.failed == 0, name
    if name in RUNNABLE:
        assert result.attempted > 0, name
