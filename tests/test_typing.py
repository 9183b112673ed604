"""A typed user script is checked against the package with mypy: public names are visible to type
checkers (not ``Any`` behind the lazy loader), so a misspelt name or a wrong type is caught."""
import re
import shutil
import subprocess
import sys
import sysconfig
import venv

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


MYPY_ERRORS_AT_MOST = 0
def test_an_installed_wheel_shows_its_types_outside_the_repository(tmp_path, cache):
    """Issue 30.3: mypy run from another directory against the package installed from its wheel
    (not the checkout, not the editable install, whose import hook mypy cannot follow) sees the
    real types: the wheel carries ``py.typed``.  The wheel goes into an environment of its own;
    torch and pydantic come from this one through a ``.pth`` path, which mypy reads."""
    from conftest import REPO
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "mmsc_dgl", source / "mmsc_dgl", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(pip[:3] + ["wheel"] + pip[3:] + ["--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheels"),
                                                   str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheels").glob("mmsc_dgl-*.whl")
    venv.create(tmp_path / "env", with_pip=False)
    python = tmp_path / "env" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(pip[:3] + ["install"] + pip[3:] + ["--no-deps", "--target", site, str(wheel)], check=True,
                   capture_output=True, timeout=300)
    assert (tmp_path / site / "mmsc_dgl" / "py.typed").exists()
    (tmp_path / site / "libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    results = {}
    for name, text in (("user.py", USER_SCRIPT), ("mistakes.py", MISTAKES)):
        (elsewhere / name).write_text(text)
        results[name] = subprocess.run([sys.executable, "-m", "mypy", "--python-executable", str(python),
                                        "--follow-imports=silent", "--no-error-summary", "--cache-dir", str(cache),
                                        name], capture_output=True, text=True, timeout=600, cwd=elsewhere)
    assert results["user.py"].returncode == 0, results["user.py"].stdout + results["user.py"].stderr
    out = results["mistakes.py"].stdout
    assert 'has no attribute "trian"' in out and 'expression has type "ItemModel", variable has type "int"' in out, out


"""``mypy mmsc_dgl`` errors (issue 30.3): 201 when first counted, none since 2026-12-06; a change
that adds a type error fails here."""


def test_the_package_has_no_more_type_errors_than_recorded(cache):
    from conftest import REPO
    out = subprocess.run([sys.executable, "-m", "mypy", "mmsc_dgl", "--ignore-missing-imports",
                          "--cache-dir", str(cache)], capture_output=True, text=True, timeout=900, cwd=REPO)
    found = re.search(r"Found (\d+) errors?", out.stdout)
    count = int(found.group(1)) if found else 0
    assert found or "Success" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert count <= MYPY_ERRORS_AT_MOST, (f"mypy mmsc_dgl: {count} errors, more than the {MYPY_ERRORS_AT_MOST} "
                                          "recorded; fix the new ones:\n" + out.stdout[-4000:])
