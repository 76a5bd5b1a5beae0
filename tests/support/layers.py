"""The layer check (``make lint``): product code imports only downward, and no module cycle — function-level
imports included (the AST of every module, not what happens to be imported at start-up).

Layers, top to bottom (a module may import its own layer and any layer below it):

- ``entry``: the CLI (``consumer.cli``, with its local-stack commands), the local stack (``consumer.local``) and the
  configuration reference generator. Nothing below imports them.
- ``runtime``: ``allocguard run`` (``consumer.runtime``, but for the parts operations share, below).
- ``operations``: the one-shot commands' logic (``consumer.operations``: check, replay, reconcile, dlq, plans…).
- ``stream``: what the runtime and the one-shot readers share about Kafka: routing, offsets, health's Kafka log.
- ``core``: settings, telemetry, redaction, version, reports.
- ``handlers``: detection, evidence, pruning, retry, prevention, the store (nothing of ``consumer``).
- ``schemas``: the Debezium envelopes and rows.

``python -m tests.support.layers`` prints each violation (``module → imported``) and exits 1 if there is any."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("consumer", "handlers", "schemas")

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry", ("consumer.cli", "consumer.configref", "consumer.local", "consumer.__main__")),
    ("runtime", ("consumer.runtime",)),
    ("operations", ("consumer.operations",)),
    ("stream", ("consumer.runtime.routing", "consumer.runtime.offsets", "consumer.runtime.health")),
    ("core", ("consumer",)),
    ("handlers", ("handlers",)),
    ("schemas", ("schemas",)),
]


def layer_of(module: str) -> int:
    """The index of the most specific layer prefix that names ``module`` (lower index: higher layer)."""
    best, length = len(LAYERS) - 1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    return best


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every internal module ``module`` imports, anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    seen: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name not in seen:
                seen.add(name)
                yield name


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {module: set(imports(module, path, known)) for module, path in known.items()}
    for module, targets in edges.items():  # a package's __init__ is not an import of its own modules
        targets.discard(module.rpartition(".")[0])
    return edges


def upward(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer_of(target) < layer_of(module):
                found.append(
                    f"{module} ({LAYERS[layer_of(module)][0]}) → {target} ({LAYERS[layer_of(target)][0]}): upward"
                )
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    edges = graph()
    problems = upward(edges) + [f"cycle: {' ↔ '.join(c)}" for c in cycles(edges)]
    for line in problems:
        print(line)
    print(f"layers: {len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
