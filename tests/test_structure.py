"""The shape of the package, checked from its source: layers without cycles, small functions, one error contract.

* No import circles between modules, and no import from a lower layer to a higher one (function-local imports
  count: an import hidden in a function is still a dependency).
* The command-line modules depend on ``cli/args.py`` and the library, never on each other.
* No function body over 100 lines (docstrings not counted), except argparse builders and network constructors.
* Every exception the package raises on purpose is a :class:`scoresde.errors.ScoreSDEError` subclass.
"""

import ast
import builtins
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "scoresde"

#: Layers, lowest first: a module may import from its own layer or below, never above.
LAYERS = [
    {"errors", "_version"},
    {"_validation"},
    {"_utils", "noise"},
    {"sde"},
    {"score", "exact", "flow", "guidance", "progress", "nets", "config", "distributed", "threads"},
    {"solvers", "data"},
    {"likelihood", "inpainting", "losses"},
    {"smc", "checkpoint"},
    {"plotting", "classifier", "metrics", "baselines", "pretrained", "shard", "latent"},
    {"evaluate", "training"},
    {"cli", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules():
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _targets(mod: str, node: ast.AST):
    """The package modules an import statement in ``mod`` names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = mod.split(".")
    if not MODULES[mod].name == "__init__.py":
        base = base[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        pkg = ".".join(base + ([node.module] if node.module else []))
    else:
        pkg = node.module or ""
    subs = [f"{pkg}.{a.name}" for a in node.names if f"{pkg}.{a.name}" in MODULES]
    if subs and len(subs) == len(node.names):
        return subs  # `from .. import distributed`: the submodules only
    return [pkg] + subs if pkg in MODULES else subs


def _edges():
    edges = {}
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update(t for t in _targets(mod, node) if t != mod)
        edges[mod] = found
    return edges


EDGES = _edges()


def _top(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "scoresde"


def test_every_module_has_a_layer():
    missing = sorted({_top(m) for m in MODULES} - set(LAYER) - {"scoresde"})
    assert not missing, f"put these modules in a layer of tests/test_structure.py: {missing}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = []
    for a, targets in EDGES.items():
        for b in targets:
            ta, tb = _top(a), _top(b)
            if ta == tb or tb == "scoresde" and a.startswith("scoresde.") and ta == "scoresde":
                continue
            if tb == "scoresde" or LAYER.get(tb, -1) > LAYER.get(ta, 99):
                bad.append(f"{a} -> {b}")
    assert not bad, "imports that run up the layers:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    graph = EDGES
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_command_modules_do_not_import_each_other():
    commands = [m for m in MODULES if m.startswith("scoresde.cli.") and m != "scoresde.cli.args"]
    bad = [f"{a} -> {b}" for a in commands for b in EDGES[a] if b in commands]
    assert not bad, bad


#: Functions allowed past 100 lines: argparse builders and network constructors.
LONG_OK = {("scoresde/nets/ncsnpp.py", "__init__"), ("scoresde/nets/ddpm_unet.py", "__init__")}


def test_no_function_body_over_100_lines():
    long = []
    for path in ROOT.rglob("*.py"):
        rel = str(path.relative_to(ROOT.parent))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    body = body[1:]
                if not body:
                    continue
                n = body[-1].end_lineno - body[0].lineno + 1
                if n > 100 and (rel, node.name) not in LONG_OK and not node.name.startswith(("add_parsers", "build_parser")):
                    long.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_every_deliberate_raise_is_a_scoresde_error():
    builtin_errors = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
                      and issubclass(getattr(builtins, n), BaseException)} - {"KeyboardInterrupt", "SystemExit",
                                                                               "NotImplementedError", "StopIteration"}
    bad = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name) \
                    and node.exc.func.id in builtin_errors:
                bad.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} raise {node.exc.func.id}(...)")
    assert not bad, "raise a scoresde.errors class instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", ["ScoreFn"])
def test_one_definition_of(name):
    where = []
    for path in ROOT.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                where.append(str(path.relative_to(ROOT.parent)))
    assert len(where) == 1, where
