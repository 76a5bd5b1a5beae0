"""The layer check sees what it must: an upward import (also one inside a function), a cycle — and the product has
neither."""

from __future__ import annotations

from pathlib import Path

from tests.support import layers


def test_the_product_imports_only_downward_and_has_no_cycle() -> None:
    edges = layers.graph()
    assert "consumer.runtime.loop" in edges, "the check reads the product's modules"
    assert layers.upward(edges) == []
    assert layers.cycles(edges) == []


def test_a_function_level_import_is_seen(tmp_path: Path) -> None:
    module = tmp_path / "check.py"
    module.write_text("def late():\n    from consumer.local.stack import LocalStack\n    return LocalStack\n")
    known = {"consumer.operations.check": module, "consumer.local.stack": tmp_path / "stack.py"}
    assert list(layers.imports("consumer.operations.check", module, known)) == ["consumer.local.stack"]


def test_an_upward_import_and_a_cycle_are_reported() -> None:
    edges = {
        "consumer.config": {"consumer.operations.check"},  # core → operations: upward
        "consumer.operations.check": {"consumer.config"},
        "handlers.store": set(),
    }
    assert layers.upward(edges) == ["consumer.config (core) → consumer.operations.check (operations): upward"]
    assert layers.cycles(edges) == [["consumer.config", "consumer.operations.check"]]
