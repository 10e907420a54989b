"""The layering the project promises, read from the source.

Calls go one way down: web -> chat -> engine -> storage, with the shared modules
(config, errors, faults, messages) below them all. The composition root (``llava_app.application``)
wires the layers below the web and hands the web one ``App``; benchmarks may use anything.
Only the web layer imports gradio; only the engine imports torch or transformers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "llava_app"

SHARED = {"config", "errors", "faults", "messages"}
# What each part of the package may import from the package (besides itself).
ALLOWED = {
    "shared": set(),
    "storage": {"shared"},
    "engine": {"storage", "shared"},
    "chat": {"engine", "storage", "shared"},
    "web": {"application", "chat", "shared"},
    "application": {"chat", "engine", "storage", "shared"},
    "benchmarks": {"web", "chat", "engine", "storage", "shared", "application"},
}


def _part(module: str) -> str | None:
    """The layer of a dotted ``llava_app`` module name."""
    parts = module.split(".")
    if parts[0] != "llava_app" or len(parts) < 2:
        return None
    top = parts[1]
    return "shared" if top in SHARED else top


def _package_imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[str, int]]:
    """Absolute ``llava_app`` modules a file imports, with line numbers (relative imports resolved)."""
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            found += [(n, node.lineno) for n in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return [(m, line) for m, line in found if m.startswith("llava_app")]


def _third_party(path: Path, name: str) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == name for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == name:
            return True
    return False


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    parts = {_part("llava_app." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in _modules()
             if p.name != "__init__.py" or p.parent != PACKAGE}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


def test_imports_go_one_way_down():
    offenders = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if rel == Path("__init__.py"):
            continue
        mine = _part("llava_app." + ".".join(rel.with_suffix("").parts))
        for module, line in _package_imports(path):
            theirs = _part(module)
            if theirs not in (None, mine) and theirs not in ALLOWED[mine]:
                offenders.append(f"{rel}:{line} ({mine}) imports {module} ({theirs})")
    assert offenders == []


def test_only_the_web_layer_imports_gradio():
    offenders = [str(p.relative_to(PACKAGE)) for p in _modules()
                 if p.relative_to(PACKAGE).parts[0] not in ("web", "benchmarks") and _third_party(p, "gradio")]
    assert offenders == []


def test_torch_and_transformers_only_in_the_engine():
    offenders = [str(p.relative_to(PACKAGE)) for p in _modules()
                 if p.relative_to(PACKAGE).parts[0] not in ("engine", "benchmarks")
                 and (_third_party(p, "torch") or _third_party(p, "transformers"))]
    assert offenders == []


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_function_over_80_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


# Importing every layer and building a whole remote-only app loads neither torch nor transformers: checked in a
# fresh process by integration/test_remote_app.py (test_a_remote_only_app_imports_neither_torch_nor_transformers).


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(root: Path = PACKAGE.parent) -> dict[str, set[str]]:
    """Which ``llava_app`` modules each one imports: at module level, inside functions and under
    ``TYPE_CHECKING`` alike (an import moved into a function to dodge a cycle is still the cycle).
    ``from package import module`` counts as importing the module; the packages a submodule's import
    runs on the way (its parents' ``__init__``) do not count."""
    files = {_module_name(p, root): p for p in sorted((root / "llava_app").rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_cycles():
    """No two modules import each other, directly or round a longer loop (a shared piece goes into a
    module of its own that both import)."""
    graph = _import_graph()
    found = _cycles(graph)
    described = {" <-> ".join(sorted(c)): sorted(f"{a} -> {b}" for a in c for b in graph[a] if b in c)
                 for c in found}
    assert described == {}


def test_the_cycle_checker_sees_a_cycle_through_a_function_level_import(tmp_path):
    probe = tmp_path / "llava_app" / "chat"
    probe.mkdir(parents=True)
    (tmp_path / "llava_app" / "__init__.py").write_text("")
    (probe / "__init__.py").write_text("")
    (probe / "a.py").write_text("from llava_app.chat import b\n")
    (probe / "b.py").write_text("def f():\n    from .c import g\n")
    (probe / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (probe / "d.py").write_text("from llava_app.chat.a import b\n")  # imports a, not part of the loop
    graph = _import_graph(tmp_path)
    assert graph["llava_app.chat.a"] == {"llava_app.chat.b"}
    assert _cycles(graph) == [{"llava_app.chat.a", "llava_app.chat.b", "llava_app.chat.c"}]


def test_the_layering_checker_sees_an_upward_import(tmp_path):
    """The checker itself: a relative upward import from storage into chat is found."""
    probe = tmp_path / "llava_app" / "storage"
    probe.mkdir(parents=True)
    (probe / "bad.py").write_text("from ..chat.conversation import Conversation\nimport llava_app.web.page\n")
    found = [m for m, _ in _package_imports(probe / "bad.py", root=tmp_path)]
    assert found == ["llava_app.chat.conversation", "llava_app.web.page"]
    assert not {_part(m) for m in found} & ALLOWED["storage"]


def test_our_own_warnings_fail_a_test_while_third_party_ones_stay_quiet():
    """pyproject.toml's pytest settings hide other libraries' deprecations, never ours."""
    import warnings

    import pytest

    for category in (UserWarning, DeprecationWarning):
        with pytest.raises(category):
            warnings.warn_explicit("ours", category, "llava_app/chat/x.py", 1, module="llava_app.chat.x")
        warnings.warn_explicit("theirs", category, "somelib/x.py", 1, module="somelib.x")  # ignored, no error
