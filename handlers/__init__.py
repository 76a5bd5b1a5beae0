"""Decisions: detection, evidence and plans, the executor, and the retry strategies (no Kafka, no telemetry)."""
