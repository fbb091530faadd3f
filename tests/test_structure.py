"""The package layout holds: imports run one way, only lrstream/distributed imports Ray, modules stay small."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lrstream"

# What each layer may import from lrstream (DESIGN.md: jobs -> distributed / training / data -> numerics).
ALLOWED = {
    "errors": set(),
    "numerics": {"errors", "numerics"},
    "data": {"errors", "numerics", "data"},
    "training": {"errors", "numerics", "training"},
    "distributed": {"errors", "numerics", "training", "data", "distributed"},
    "jobs": {"errors", "numerics", "training", "data", "distributed", "jobs"},
    "cli": {"errors", "numerics", "training", "data", "distributed", "jobs"},
    "__init__": {"errors", "numerics", "training", "data"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("lrstream", *parts)).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module this one imports, anywhere in it (function-level imports included), as absolute names."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _layer(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_layers_import_only_downwards():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for target in _imports(name, path):
            if target.startswith("lrstream.") and target.split(".")[1] != "__init__":
                layer, other = _layer(name), target.split(".")[1]
                if other not in ALLOWED[layer]:
                    bad.append(f"{name} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    modules = _modules()
    graph = {name: {t for t in _imports(name, path) if t in modules and t != name} for name, path in modules.items()}
    for name in graph:  # a package's own modules may re-export through it, which is not a cycle of ideas
        graph[name] = {t for t in graph[name] if not (modules[t].name == "__init__.py" and name.startswith(t + "."))}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_only_the_distributed_package_imports_ray():
    offenders = [name for name, path in _modules().items() if not name.startswith("lrstream.distributed") and any(t == "ray" or t.startswith("ray.") for t in _imports(name, path))]
    assert offenders == []
    # ... and it really does: the check would pass vacuously if nothing imported Ray.
    assert any("ray" in _imports(name, path) for name, path in _modules().items() if name.startswith("lrstream.distributed"))


def test_numerics_and_training_load_no_storage_and_no_ray():
    names = [n for n in _modules() if n.startswith(("lrstream.numerics", "lrstream.training"))]
    code = "import sys\n" + "".join(f"import {n}\n" for n in names) + "print(sorted({m.split('.')[0] if not m.startswith('lrstream.') else '.'.join(m.split('.')[:2]) for m in sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out.strip().splitlines()[-1]))
    assert "torch" in loaded and "lrstream.numerics" in loaded and "lrstream.training" in loaded
    assert not loaded & {"ray", "fsspec", "pyarrow", "lrstream.data", "lrstream.distributed", "lrstream.jobs"}


def test_modules_stay_a_screenful_or_two():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long
