"""The layer rules of DESIGN.md, checked by reading every import statement.

import-linter (`make lint`) checks the same layering on the import graph; this test adds
what its contracts do not say well: which standard-library modules each layer may use.
The pure cores must not reach a socket, the clock, a thread or asyncio; only the thin
asyncio adapters of sipstack may, and they are listed here by name so that a new one
is a visible decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Highest first: a package may import only from packages after it.
LAYERS = ["agent", "provisioning", "dialplan", "sipstack"]

# I/O, concurrency and the clock. "time" is here because the core is handed `now`.
# Matched as dotted prefixes: urllib.parse and http.HTTPStatus are pure and allowed.
IMPURE = {
    "asyncio", "socket", "ssl", "selectors", "select", "sqlite3", "subprocess", "threading",
    "multiprocessing", "concurrent", "time", "http.client", "http.server", "urllib.request",
    "uvloop", "signal",
}


def is_impure(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in IMPURE)

# sipstack modules that are allowed to do I/O: the asyncio adapters around the core.
SIPSTACK_ADAPTERS = {"sipstack/transport.py"}


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute top-level-qualified name) of every import, also inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package_parts = path.relative_to(REPO).with_suffix("").parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(package_parts[: len(package_parts) - node.level + 1])
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def layer_of(module: str) -> str | None:
    top = module.split(".", 1)[0]
    return top if top in LAYERS else None


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_down_the_layers(package):
    allowed_below = set(LAYERS[LAYERS.index(package):])
    problems = []
    for path in python_files(package):
        for line, module in imported_modules(path):
            target = layer_of(module)
            if target is not None and target not in allowed_below:
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {module} "
                                f"({package} is below {target})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", ["sipstack", "dialplan"])
def test_pure_layers_do_no_io(package):
    problems = []
    for path in python_files(package):
        rel = path.relative_to(REPO).as_posix()
        if rel in SIPSTACK_ADAPTERS:
            continue
        for line, module in imported_modules(path):
            if is_impure(module):
                problems.append(f"{rel}:{line}: imports {module}")
    assert not problems, (
        "the pure core must not do I/O or read the clock (take `now` instead); "
        "asyncio adapters belong in SIPSTACK_ADAPTERS of this test:\n" + "\n".join(problems)
    )


def test_adapters_listed_still_exist():
    missing = [a for a in SIPSTACK_ADAPTERS if not (REPO / a).exists()]
    assert not missing, f"stale entries in SIPSTACK_ADAPTERS: {missing}"
