"""The package's shape, read from its source: imports point down only, no cycles, no file that
grew past ~400 lines without saying why at its top.

Layers, bottom to top (a module may import its own layer or lower ones, never higher):

0. leaf helpers: ``atomic``, ``config`` (the dataclass <-> YAML machinery), ``checkpoint``,
   ``distributed``, ``precision``, ``seeding``
1. ``augment`` (batched tensor ops, no I/O)
2. ``data`` (decoding, front-ends, data sets, manifests, the synthetic generator)
3. ``models`` (encoders shared by methods)
4. ``eval`` (metrics, pure), then ``viz``
5. ``methods`` (``base`` and one folder per method; a method never imports another)
6. ``registry`` (THE table of methods)
7. ``train_config`` (the run config: one section per registered method)
8. ``engine`` (training loop, evaluation)
9. ``infer``, ``report``, ``demo``, ``app``
10. ``commands``, ``cli``, ``__main__``

Function-level (lazy) imports count too: a lazy import is no excuse for an upward one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = [
    ("avssl", 0), ("avssl.atomic", 0), ("avssl.config", 0), ("avssl.checkpoint", 0), ("avssl.distributed", 0),
    ("avssl.precision", 0), ("avssl.seeding", 0), ("avssl.augment", 1), ("avssl.data", 2), ("avssl.models", 3), ("avssl.eval", 4), ("avssl.viz", 4.5),
    ("avssl.methods", 5), ("avssl.registry", 6), ("avssl.train_config", 7), ("avssl.engine", 8),
    ("avssl.infer", 9), ("avssl.report", 9), ("avssl.demo", 9), ("avssl.app", 9),
    ("avssl.commands", 10), ("avssl.cli", 10), ("avssl.__main__", 10),
]
MAX_LINES = 410  # "~400"
LONG_FILE_MARK = "Long file:"  # a module over MAX_LINES says why in its docstring, after this mark


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "avssl").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int]]:
    """Every avssl module ``name`` imports (``from pkg import mod`` resolved to the module), with its line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "avssl" or target.startswith("avssl."):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.append((sub if sub in mods else target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("avssl")]
    return out


def _layer(module: str) -> float:
    matches = [(len(prefix), level) for prefix, level in LAYERS if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def _method(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "methods" and parts[2] != "base" else None


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def test_imports_point_down_only(graph):
    upward = [f"{a}:{line} imports {b}" for a, edges in graph.items() for b, line in edges
              if _layer(b) > _layer(a)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_a_method_never_imports_another(graph):
    crossing = [f"{a}:{line} imports {b}" for a, edges in graph.items() for b, line in edges
                if _method(a) and _method(b) and _method(a) != _method(b)]
    assert not crossing, "\n".join(crossing)


def test_no_import_cycles(graph):
    """Between modules (a package's ``__init__`` re-exporting its own modules is not a cycle)."""
    edges = {a: {b for b, _ in bs if b != a and not a.startswith(b + ".")} for a, bs in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_upward_and_cyclic_imports(tmp_path):
    """The rules above can fail: a lower module importing a higher one is caught."""
    fake = tmp_path / "avssl" / "data"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("def f():\n    from avssl.engine import train\n")
    mods = {"avssl.data.x": fake / "x.py", "avssl.engine.train": tmp_path / "t.py"}
    (edge, line), = _imports("avssl.data.x", fake / "x.py", mods)
    assert edge == "avssl.engine.train" and line == 2 and _layer(edge) > _layer("avssl.data.x")


def test_long_files_say_why():
    unexplained = []
    for path in sorted((SRC / "avssl").rglob("*.py")):
        text = path.read_text()
        n = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if n > MAX_LINES and LONG_FILE_MARK not in doc:
            unexplained.append(f"{path.relative_to(SRC)}: {n} lines")
    assert not unexplained, (f"files over {MAX_LINES} lines without a '{LONG_FILE_MARK} <why>' "
                             "line in their docstring:\n" + "\n".join(unexplained))
