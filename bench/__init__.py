"""Benchmarks: each prints JSON and measures its baseline in the same run."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka.admin import AdminClient

from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack


def local_stack() -> StackSettings:
    """The local stack the benchmarks run on, its settings exported to this process and its children (allocguard's
    commands have no defaults: a benchmark says where the stack is, as `eval "$(allocguard stack env)"` does)."""
    settings = StackSettings()
    os.environ.update(LocalStack(settings).required_env())
    return settings


@contextmanager
def scratch_topics(settings: StackSettings) -> Iterator[list[str]]:
    """The topics a benchmark writes (it appends their names): deleted when it is done with them — a 1M-message
    topic of the platform's traffic is ≈ 1.1 GB on the broker's disk, and a storm run writes seven."""
    topics: list[str] = []
    try:
        yield topics
    finally:
        if topics:
            admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
            for future in admin.delete_topics(topics, operation_timeout=30).values():
                try:
                    future.result()
                except Exception as exc:  # a topic left behind is disk, not a wrong figure: say so and go on
                    print(f"could not delete a bench topic: {exc}", file=sys.stderr)
