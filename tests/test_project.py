"""The promises a new user meets first: README commands, CI, the import and the entry points."""
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def _readme_commands():
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands[0].splitlines()) == 1 and "mmsc-dgl" in commands[0]
    assert len(commands[1].splitlines()) == 1 and "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci, ".ci/run must run the README's test command verbatim"
    # Nothing but the two commands (and their one-line captions) comes before them.
    head = (REPO / "README.md").read_text().split(commands[1])[0]
    assert head.count("```bash") == 2


def test_import_does_not_pull_in_dgl():
    code = ("import sys, mmsc_dgl, mmsc_dgl.data.negatives, mmsc_dgl.data.splits, mmsc_dgl.config;"
            "assert 'dgl' not in sys.modules, 'dgl imported'; print(mmsc_dgl.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == __import__("mmsc_dgl").__version__


def test_dataset_loads_without_dgl(tmp_path):
    """A GPU host has no DGL: loading a prepared dataset must not need it."""
    from mmsc_dgl.config import SyntheticConfig
    from mmsc_dgl.data.prepare import prepare
    prepare(synthetic=SyntheticConfig(num_items=300, seed=1), out=tmp_path / "ds")
    code = ("import sys; sys.modules['dgl'] = None\n"
            "import mmsc_dgl\n"
            f"ds = mmsc_dgl.load_dataset({str(tmp_path / 'ds')!r})\n"
            "print(ds.num_items, len(ds.splits.test['substitute']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "300"


def test_lazy_attributes_resolve():
    import mmsc_dgl
    assert mmsc_dgl.RELATIONS == ("substitute", "complement")
    for name in mmsc_dgl._LAZY:
        assert getattr(mmsc_dgl, name) is not None
    assert "prepare" in dir(mmsc_dgl)


def test_python_dash_m_and_console_script_agree():
    out_m = subprocess.run([sys.executable, "-m", "mmsc_dgl", "--help"], capture_output=True, text=True)
    assert out_m.returncode == 0 and "prepare" in out_m.stdout
    # The README installs the package (pip install -e), which puts the console script beside
    # the interpreter; a missing script is a broken install, not a reason to skip.
    script = Path(sys.executable).parent / "mmsc-dgl"
    assert script.exists(), f"{script} is missing: install with pip install -e ."
    out_s = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out_s.stdout == out_m.stdout


def test_the_installed_stack_satisfies_setup_cfg():
    """Every requirement in setup.cfg (install_requires and the test extra) holds for what is
    installed: a drifted environment, or a pin that no longer installs, fails here."""
    import configparser
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["test"].splitlines()
    requirements = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    assert {r.name for r in requirements} >= {"torch", "dgl", "torchdata", "numpy", "pandas", "pyarrow", "filelock"}
    wrong = []
    for req in requirements:
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            wrong.append(f"{req}: not installed")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            wrong.append(f"{req}: {installed} installed")
    assert not wrong, wrong


def test_no_source_file_is_git_ignored():
    """A pattern in .gitignore once matched mmsc_dgl/runs/ (meant for the top-level runs/ that
    training writes): the package would have reached a fresh clone without that floor."""
    import pytest
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(REPO)) for top in ("mmsc_dgl", "tests", "examples", "benchmarks", "docs")
             for p in (REPO / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    out = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(files), cwd=REPO,
                         capture_output=True, text=True)
    ignored = [line for line in out.stdout.splitlines() if line.strip()]
    assert not ignored, "git ignores these source files: " + ", ".join(ignored[:10])
