"""The shape of the package: no import cycle (function-local imports included), the thesis'
experiments and the command line kept out of the library, curated public namespaces, and no
module so long that a concept is missing."""
import ast
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "nc_jax")


def _modules():
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = \
                    os.path.join(dirpath, f)
    return out


def import_graph():
    """{module: set of nc_jax modules it imports}, every import statement counted wherever it
    stands (module level or inside a function); `from P import name` is an edge to the
    submodule P.name when that is a module, else to P; and an edge to P.sub is one to the
    package P too (its `__init__` runs first) unless the importer is inside P."""
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        pkg = m if path.endswith("__init__.py") else m.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            else:
                continue
            graph[m] |= {t for t in targets if t in mods and t != m}
    # importing P.sub first runs P/__init__ (and its parents), unless the importer is inside P
    for m in graph:
        for t in list(graph[m]):
            parts = t.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in mods and not (m == parent or m.startswith(parent + ".")):
                    graph[m].add(parent)
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_library_never_imports_the_thesis_or_the_cli():
    graph = import_graph()
    app = ("nc_jax.thesis", "nc_jax.cli")
    for m, deps in graph.items():
        if m.startswith(app):
            continue
        bad = sorted(d for d in deps if d.startswith(app))
        assert not bad, f"{m} imports {bad}"


def test_losses_and_naming_are_leaves():
    """`nc_jax.config` validates loss names against `nc_jax.losses`, so the losses may import
    nothing of nc-jax but the naming module (which imports nothing of nc-jax at all)."""
    graph = import_graph()
    assert graph["nc_jax._naming"] == set()
    for m, deps in graph.items():
        if m.startswith("nc_jax.losses"):
            outside = {d for d in deps if not d.startswith("nc_jax.losses")}
            assert outside <= {"nc_jax._naming"}, (m, sorted(outside))


def test_no_module_over_400_lines():
    long = {m: n for m, p in _modules().items()
            if (n := sum(1 for _ in open(p, encoding="utf-8"))) > 400}
    assert not long, long


@pytest.mark.parametrize("pkg", ["nc_jax", "nc_jax.config", "nc_jax.models", "nc_jax.losses", "nc_jax.data",
                                 "nc_jax.training", "nc_jax.metrics", "nc_jax.analysis",
                                 "nc_jax.ufm", "nc_jax.runs", "nc_jax.thesis", "nc_jax.cli"])
def test_public_namespaces_are_curated(pkg):
    mod = importlib.import_module(pkg)
    assert sorted(mod.__all__) == sorted(set(mod.__all__)), "duplicates in __all__"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{pkg}.__all__ names {name!r}, which it does not define"
    # private modules start with an underscore: every submodule file of a subpackage is private
    if pkg != "nc_jax" and hasattr(mod, "__path__"):
        for f in os.listdir(mod.__path__[0]):
            if f.endswith(".py") and f not in ("__init__.py", "__main__.py"):
                assert f.startswith("_"), f"{pkg}: public module file {f}"


def test_documented_names_keep_working():
    import nc_jax
    import nc_jax.cli
    from nc_jax.config import DataConfig, ModelConfig, OptimConfig, SweepConfig  # noqa: F401
    assert nc_jax.SweepConfig is SweepConfig
    for name in ("run_sweep", "analyse", "SweepConfig"):
        assert callable(getattr(nc_jax, name))
    assert callable(nc_jax.ufm.solve) and callable(nc_jax.data.from_arrays)
    assert callable(nc_jax.models.register_model) and callable(nc_jax.models.from_nnx)
    assert callable(nc_jax.losses.register_loss) and callable(nc_jax.losses.get_loss)
    assert callable(nc_jax.metrics.collapse_report) and callable(nc_jax.cli.main)
