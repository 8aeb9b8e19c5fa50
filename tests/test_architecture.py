"""The floors of docs/architecture.md hold: no module imports from a floor above its own, and
no import cycle joins two packages. Static (the source's import statements), so it costs ~0.1 s."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gpunet"

FLOORS = {
    0: ("errors", "checks", "argcheck", "backend", "fileio", "threads", "runlock"),
    1: ("ops", "metrics", "regularizers", "testing", "precision", "loss_scale"),
    2: ("nn", "data"),
    3: ("losses", "optim", "models"),
    4: ("step", "callbacks", "checkpoint", "plot", "interop"),
    5: ("parallel", "doctor"),
    6: ("train",),
    7: ("compare", "experiments", "bench", "cli", "__main__", "gpunet"),  # "gpunet": `import gpunet as gn`
}
FLOOR = {name: floor for floor, names in FLOORS.items() for name in names}


def _unit(module: str) -> str:
    """gpunet.nn.linear -> nn; gpunet -> gpunet (the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gpunet"


def import_edges():
    """(importer unit, imported unit, file) for every import of gpunet inside gpunet/."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        package = parts if parts[-1] == "__init__" else parts[:-1]
        package = [p for p in package if p != "__init__"]
        me = _unit(".".join(p for p in parts if p != "__init__"))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - (node.level - 1)]
                if node.module:
                    targets = [".".join(base + [node.module])]
                else:
                    targets = [".".join(base + [a.name]) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t == "gpunet" or t.startswith("gpunet."):
                    other = _unit(t)
                    if other != me:
                        edges.append((me, other, path.relative_to(PACKAGE.parent)))
    return edges


def test_every_unit_has_a_floor():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__init__.py"}
    assert units - set(FLOOR) == set(), "add these to FLOORS here and to docs/architecture.md"


def test_no_module_imports_from_a_floor_above_its_own():
    up = [f"{f}: {a} (floor {FLOOR[a]}) imports {b} (floor {FLOOR[b]})"
          for a, b, f in import_edges() if a in FLOOR and b in FLOOR and FLOOR[b] > FLOOR[a]]
    assert up == []


def test_no_import_cycle_between_packages():
    graph = {}
    for a, b, _ in import_edges():
        graph.setdefault(a, set()).add(b)
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
