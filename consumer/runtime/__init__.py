"""The always-on consumer, ``allocguard run``: ``loop`` (the Runtime: poll, route, hand over, commit),
``routing`` (the byte test and the per-message decision, shared with replay), ``scheduler`` (key-ordered workers,
the batch thread), ``offsets`` (what may be committed; topic positions) and ``health`` (outages, /readyz,
/metrics)."""
