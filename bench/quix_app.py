"""The same job in Quix Streams (deserialise every value, filter on the failure and hold markers, count), for
bench/throughput.py. It runs in its own virtualenv: quixstreams pins an older confluent-kafka than allocguard.

    <quix venv>/bin/python bench/quix_app.py BOOTSTRAP TOPIC COUNT
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from quixstreams import Application


def main() -> None:
    bootstrap, topic_name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, value_deserializer="json")
    seen = {"n": 0, "signals": 0, "first": 0.0, "last": 0.0}

    def observe(value: object) -> None:
        if not seen["n"]:
            seen["first"] = time.monotonic()
        seen["n"] += 1
        seen["last"] = time.monotonic()
        if seen["n"] >= count:
            app.stop()

    def relevant(value: object) -> bool:
        after = value.get("after") if isinstance(value, dict) else None
        context = after.get("context") if isinstance(after, dict) else None
        kind = after.get("event_type") if isinstance(after, dict) else None
        return kind == "capacity.hold.created" or (isinstance(context, str) and "allocations_no_overlap" in context)

    sdf = app.dataframe(topic)
    sdf = sdf.update(observe)
    sdf = sdf.filter(relevant)
    sdf = sdf.update(lambda value: seen.__setitem__("signals", seen["signals"] + 1))
    app.run()
    elapsed = seen["last"] - seen["first"]
    print(json.dumps({"events": seen["n"], "signals": seen["signals"], "events_per_s": seen["n"] / elapsed}))


if __name__ == "__main__":
    main()
