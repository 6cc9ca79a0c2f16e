"""The house's floors, read from the source: which package may import which, no import
cycle between modules, and no import tucked below a module's code to dodge one.

    cli          the top floor: the ``botmain`` command; nothing imports it
    jobs         Ray job entry points (ingest, sweep, train-selector)
    serve        the venue selector service
    actors       market data and strategy actors
    sim          the simulator
    strategies   strategy logic
    cluster      the ground: domain types, configuration, store, lake, Ray runtime
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAY_IMPORT = {
    "cluster": set(),
    "strategies": {"cluster"},
    "sim": {"cluster", "strategies"},
    "actors": {"cluster", "strategies", "sim"},
    "serve": {"cluster", "strategies", "sim", "actors"},
    "jobs": {"cluster", "strategies", "sim", "actors", "serve"},
    "cli": {"cluster", "strategies", "sim", "actors", "serve", "jobs"},
}


def modules() -> dict[str, Path]:
    out = {}
    for package in MAY_IMPORT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        # `from pkg import mod` imports pkg.mod when that is a module
        return [target, *(f"{target}.{a.name}" for a in node.names)]
    return []


def all_imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    return [(node.lineno, name) for node in ast.walk(tree) for name in imported(node, module, is_package)]


def test_each_package_imports_only_the_floors_below_it():
    wrong: dict[str, str] = {}
    for module, path in modules().items():
        package = module.split(".")[0]
        for line, name in all_imports(path, module):
            target = name.split(".")[0]
            if target in MAY_IMPORT and target != package and target not in MAY_IMPORT[package]:
                wrong.setdefault(f"{path.relative_to(ROOT)}:{line}", f"({package}) imports {name}")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(f"{k} {v}" for k, v in sorted(wrong.items()))


def test_no_import_cycle_between_modules():
    """Counting imports inside functions too: a lazy import that closes a circle is still one."""
    known = modules()
    graph = {
        module: sorted({name for _, name in all_imports(path, module) if name in known and name != module})
        for module, path in known.items()
    }
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in graph[module]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_import_below_a_modules_code():
    """Imports come first (after the docstring); one placed after code is a dodged cycle."""
    late = []
    for module, path in modules().items():
        seen_code = False
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if seen_code:
                    late.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                continue  # docstring
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            elif isinstance(node, ast.Try):
                continue  # an optional import's fallback
            else:
                seen_code = True
    assert not late, "imports below code:\n" + "\n".join(late)
