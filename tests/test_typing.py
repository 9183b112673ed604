"""A typed user script is checked against the package with mypy: public names are visible to type
checkers (not ``Any`` behind the lazy loader), so a misspelt name or a wrong type is caught."""
import subprocess
import sys

import pytest

pytest.importorskip("mypy")

USER_SCRIPT = '''
from pathlib import Path

import torch

import mmsc_dgl
from mmsc_dgl import ItemModel, TopK, TrainConfig


def answer(run: Path, graph: object) -> list[list[str]]:
    config = TrainConfig(epochs=2, features=torch.randn(4, 8))
    dataset: mmsc_dgl.Dataset = mmsc_dgl.dataset_from_graph(graph, ntype="product",
                                                           relations={"also_viewed": "substitute"})
    mmsc_dgl.train(dataset, out=run, config=config)
    model: ItemModel = mmsc_dgl.load_model(run)
    top: TopK = model.topk(["A"], "complement", k=config.epochs)
    scores: torch.Tensor = model.score("A", ["B"], "substitute")
    return top.item_ids
'''

MISTAKES = '''
import mmsc_dgl
mmsc_dgl.trian("data")
count: int = mmsc_dgl.load_model("run")
'''


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One mypy cache for the module: the second check reuses what the first learnt of torch."""
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(tmp_path, cache, name, text):
    script = tmp_path / name
    script.write_text(text)
    return subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                           "--no-error-summary", "--cache-dir", str(cache), str(script)],
                          capture_output=True, text=True, timeout=600)


def test_a_typed_user_script_checks_clean(tmp_path, cache):
    out = _mypy(tmp_path, cache, "user.py", USER_SCRIPT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mistakes_are_caught(tmp_path, cache):
    out = _mypy(tmp_path, cache, "mistakes.py", MISTAKES)
    assert out.returncode == 1
    assert 'has no attribute "trian"' in out.stdout
    assert 'expression has type "ItemModel", variable has type "int"' in out.stdout
