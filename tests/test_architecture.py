"""The shape of the package, enforced: imports point down the floors (docs/architecture.md), no
module reaches for another module's private names, and everything below the DGL line imports
with DGL absent (as on the GPU hosts)."""
from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import mmsc_dgl
from conftest import REPO

PACKAGE = Path(mmsc_dgl.__file__).parent

FLOORS = [
    {"schema", "errors", "io", "hashing", "fingerprint", "ownership", "lock", "progress", "determinism"},
    {"ops"},
    {"nn", "config"},
    {"data"},
    {"metapath", "features"},
    {"eval", "models"},
    {"augment", "train"},
    {"runs"},
    {"distributed", "experiments", "bench"},
    {"cli", "terminal", "__main__"},
]
"""From the bottom: a module may import its own floor and the floors below, never one above."""
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}

BELOW_THE_LINE = ["schema", "errors", "io", "hashing", "fingerprint", "ownership", "lock", "progress", "determinism", "config",
                  "ops", "nn", "models", "train", "runs", "eval", "features", "augment"]
"""What must run without DGL (rule 1 of ARCHITECTURE.md)."""
DGL_BACKENDS = {"mmsc_dgl.ops.dgl_kernels"}
"""DGL's implementation of the fused kernel: chosen (``impl="dgl"``) only where DGL is installed."""


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel == Path("__init__.py"):
            continue
        yield rel, ast.parse(path.read_text(encoding="utf-8"))


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmsc_dgl"):
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mmsc_dgl"):
                    yield node.lineno, alias.name, []


def test_every_package_has_a_floor():
    tops = {rel.parts[0].removesuffix(".py") for rel, _ in _modules()}
    assert tops <= set(FLOOR), f"add to FLOORS (and docs/architecture.md): {sorted(tops - set(FLOOR))}"


def _climbing(modules) -> list:
    """Imports (module level or inside functions) that climb a floor, or reach the root."""
    climbing = []
    for rel, tree in modules:
        here = rel.parts[0].removesuffix(".py")
        for line, module, _ in _imports(tree):
            parts = module.split(".")
            if len(parts) < 2:  # the root is the top: it re-exports every floor (mmsc_dgl.schema's names too)
                climbing.append(f"{rel}:{line} ({here}) imports the package root; import from its module "
                                f"(RELATIONS, NODE_TYPE, __version__: mmsc_dgl.schema)")
                continue
            if FLOOR[parts[1]] > FLOOR[here]:
                climbing.append(f"{rel}:{line} ({here}, floor {FLOOR[here]}) imports {module} "
                                f"(floor {FLOOR[parts[1]]})")
    return climbing


def _circles(modules) -> list:
    """Import circles between modules (at any depth: a -> b -> ... -> a), imports inside
    functions included; each as its modules in order."""
    graph = {}
    for rel, tree in modules:
        name = "mmsc_dgl." + ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for _, m, _ in _imports(tree)}
    for name in list(graph):  # "from mmsc_dgl.train import x" means the package's __init__
        graph[name] = {m for m in graph[name] if m in graph and m != name}
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return circles


def test_imports_point_down_the_floors():
    climbing = _climbing(_modules())
    assert not climbing, "imports that climb:\n" + "\n".join(climbing)


def test_no_import_circles():
    circles = _circles(_modules())
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_checks_fail_on_a_climbing_import_a_root_import_and_a_circle():
    """The two tests above can fail: the checkers themselves, run on made-up modules."""
    climb = [(Path("ops/fake.py"), ast.parse("def f():\n    from mmsc_dgl.train.trainer import Trainer\n"))]
    root = [(Path("nn/fake.py"), ast.parse("from mmsc_dgl import RELATIONS\n"))]
    fine = [(Path("train/fake.py"), ast.parse("from mmsc_dgl.ops.csr import CSR\nfrom mmsc_dgl.schema import RELATIONS\n"))]
    assert len(_climbing(climb)) == 1 and "floor" in _climbing(climb)[0]
    assert len(_climbing(root)) == 1 and "package root" in _climbing(root)[0]
    assert _climbing(fine) == []
    circle = [(Path("train/a.py"), ast.parse("from mmsc_dgl.train.b import x\n")),
              (Path("train/b.py"), ast.parse("def g():\n    from mmsc_dgl.train.c import y\n")),
              (Path("train/c.py"), ast.parse("import mmsc_dgl.train.a\n"))]
    assert _circles(circle) == [["mmsc_dgl.train.a", "mmsc_dgl.train.b", "mmsc_dgl.train.c", "mmsc_dgl.train.a"]]
    assert _circles(circle[:2]) == []


POST_FIT = {"after_training": {"runs/finishing.py"}, "fit_cold_start": {"runs/finishing.py"},
            "record_weights": {"runs/finishing.py"}, "calibrate": {"models/mmsc.py"}}
"""The steps after ``fit``, and the only modules that may call each: the sequence is written once
(:func:`mmsc_dgl.runs.finishing.finish`), and calibration is MMSC's own after-training step."""


def _post_fit_calls(modules) -> list:
    found = []
    for rel, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in POST_FIT and rel.as_posix() not in POST_FIT[name]:
                    found.append(f"{rel}:{node.lineno} calls {name}")
    return found


def test_the_post_fit_sequence_is_written_once():
    calls = _post_fit_calls(_modules())
    assert not calls, "post-fit steps outside runs/finishing.py (call finish() instead):\n" + "\n".join(calls)


def test_the_post_fit_check_fails_on_a_second_copy():
    copy = [(Path("bench/fake.py"), ast.parse("def f(m, s, e):\n    states, _ = m.after_training(s, e)\n"
                                                "    record_weights(run_dir)\n"))]
    assert _post_fit_calls(copy) == ["bench/fake.py:2 calls after_training", "bench/fake.py:3 calls record_weights"]
    assert _post_fit_calls([(Path("runs/finishing.py"), copy[0][1])]) == []


def test_no_module_imports_another_modules_private_names():
    private = [f"{rel}:{line} imports {name} from {module}" for rel, tree in _modules()
               for line, module, names in _imports(tree) for name in names
               if name.startswith("_") and not name.startswith("__")]
    assert not private, "\n".join(private)


def test_everything_below_the_line_imports_without_dgl():
    names = []
    for top in BELOW_THE_LINE:
        path = PACKAGE / top
        if path.is_dir():
            names.append(f"mmsc_dgl.{top}")
            names += [m.name for m in pkgutil.walk_packages([str(path)], prefix=f"mmsc_dgl.{top}.")
                      if m.name not in DGL_BACKENDS]
        else:
            names.append(f"mmsc_dgl.{top}")
    code = ("import sys\nsys.modules['dgl'] = None\nimport importlib\nbad = []\n"
            f"for name in {names!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except ImportError as err:\n        bad.append(f'{name}: {err}')\n"
            "assert 'dgl' not in [m for m in sys.modules if sys.modules[m] is not None], 'dgl imported'\n"
            "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert len(names) > 40


def test_docs_architecture_names_every_module():
    """docs/architecture.md lists each package's modules: a module it does not name (it had
    left out nn/path_evidence.py, nn/graph_conv.py and experiments/tune.py) fails here."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = []
    for rel, _ in _modules():
        if rel.name == "__init__.py" or rel.name == "__main__.py":
            continue
        if len(rel.parts) == 1:
            named = f"mmsc_dgl/{rel.name}" in text
        else:  # in its package's row: `name.py`
            row = next((line for line in text.splitlines() if line.startswith(f"| `mmsc_dgl/{rel.parts[0]}/`")), "")
            named = f"`{rel.name}`" in row
        if not named:
            missing.append(str(rel))
    assert not missing, f"docs/architecture.md does not name: {missing}"
