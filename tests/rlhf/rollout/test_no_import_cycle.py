"""No import circle among the rollout package's and the agents' modules: every import counts, a function's deferred
ones too (they only hide a circle until the day something imports in the other order)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("rlhf/rollout", "rlhf/agents")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports (anywhere in it); `from package import name` counts as importing
    the module `package.name` when there is one, else the package."""
    found, package = set(), module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            # importing a.b.c runs a/__init__ and a.b/__init__ too
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
    return found - {module_name(path)}


def graph() -> dict[str, set[str]]:
    files = [f for package in PACKAGES for f in sorted((ROOT / package).glob("*.py"))]
    modules = {module_name(f) for f in files}
    return {module_name(f): imports(f, modules) for f in files}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_rollout_package_and_the_agents_import_in_no_circle():
    edges = graph()
    assert "rlhf.rollout.sources" in edges and "rlhf.agents.episodes" in edges
    # the joints that used to be circles
    assert "rlhf.agents.episodes" in edges["rlhf.rollout.sources"]
    assert "rlhf.rollout.generation" in edges["rlhf.agents.episodes"]
    assert "rlhf.rollout.asynchronous" in edges["rlhf.rollout.schedules"]
    assert cycle(edges) is None, " -> ".join(cycle(edges))


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_package_is_over_400_lines():
    long = {f.name: n for f in (ROOT / "rlhf/rollout").glob("*.py") if (n := len(f.read_text().splitlines())) > 400}
    assert not long
