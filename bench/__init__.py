"""Benchmarks: each prints JSON and measures its baseline in the same run."""

from __future__ import annotations

import os

from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack


def local_stack() -> StackSettings:
    """The local stack the benchmarks run on, its settings exported to this process and its children (allocguard's
    commands have no defaults: a benchmark says where the stack is, as `eval "$(allocguard stack env)"` does)."""
    settings = StackSettings()
    os.environ.update(LocalStack(settings).required_env())
    return settings
