"""A second, isolated connector (its own database, topic prefix, slot) with ``schemas.enable=true``:
snapshot reads, truncates and unchanged TOASTed values come through real Debezium and decode."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from consumer.local.platform import create_booking, create_venue
from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack, captured_topics, connector_config
from consumer.operations import migrations as db
from schemas import UNAVAILABLE, ChangeEvent, Op
from schemas.rows import Booking, ObservabilityEvent
from tests.e2e.test_cdc_roundtrip import assert_matches_db, fetch
from tests.support.cdc import CdcReader, RawMessage, key_has, save_fixtures
from tests.support.platform import drop_slot

pytestmark = [pytest.mark.e2e, pytest.mark.stack]


class Isolated:
    def __init__(self, settings: StackSettings, unique: str) -> None:
        self.database = f"e2e_{unique}"
        self.prefix = f"e2e{unique}"
        self.connector = f"e2e-{unique}"
        self.settings = settings
        self.stack = LocalStack(settings, log=lambda line: None)
        self.config = connector_config(
            settings, database=self.database, topic_prefix=self.prefix, value_schemas_enable=True
        )
        #: the owner, for set-up; the platform's back-end role, for the platform's writes
        self.admin_dsn = settings.dsn_for(self.database)
        self.dsn = settings.dsn_for(self.database, settings.platform_dsn)


@pytest.fixture
def isolated(stack_settings: StackSettings, unique: str) -> Iterator[Isolated]:
    env = Isolated(stack_settings, unique)
    admin = stack_settings.dsn_for("postgres")
    db.ensure_database(admin, env.database)
    db.init_database(env.admin_dsn, with_reference_schema=True, with_cdc=True)
    env.stack.ensure_topics(captured_topics(env.prefix))
    yield env
    env.stack.delete_connector(env.connector)
    drop_slot(admin, env.config["slot.name"])
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{env.database}" WITH (FORCE)')


def test_schemas_enabled_snapshot_truncate_and_toast(isolated: Isolated, capture_dir: Path | None) -> None:
    big = {"blob": base64.b64encode(os.urandom(3_000)).decode()}  # incompressible: stored out of line (TOAST)
    with psycopg.connect(isolated.dsn, row_factory=dict_row, autocommit=True) as pg:
        venue = create_venue(pg, tables=1)
        day = (datetime.now(UTC) + timedelta(days=10)).date()
        booking = create_booking(pg, venue, day=day, start=dtime(19, 0), end=dtime(21, 0))
        pg.execute("UPDATE bookings SET details = %s WHERE id = %s", (Jsonb(big), booking))
        snapshotted = fetch(pg, "bookings", id=booking)

        reader = CdcReader(isolated.settings.kafka_bootstrap, captured_topics(isolated.prefix))
        try:
            isolated.stack.register_connector(isolated.connector, isolated.config)

            # 1. the initial snapshot: op r, source.snapshot set, the full row
            (snapshot_message,) = reader.collect(key_has("id", booking), 1)
            snap = snapshot_message.decode()
            assert isinstance(snap, ChangeEvent)
            assert snap.op is Op.READ
            assert snap.source.is_snapshot
            assert snap.source.db == isolated.database
            assert_matches_db(snap.after, snapshotted)
            assert isinstance(snap.after, Booking)
            assert snap.after.details == big

            # 2. updates that leave the TOASTed column alone. Under the model's default replica identity
            # PostgreSQL sends no old tuple, and Debezium has no value to give for the unchanged TOASTed column
            pg.execute("UPDATE bookings SET status = 'confirmed' WHERE id = %s", (booking,))
            # with REPLICA IDENTITY FULL (table ownership needed: the owner's connection) the whole before-image
            with psycopg.connect(isolated.admin_dsn, autocommit=True) as owner:
                owner.execute("ALTER TABLE bookings REPLICA IDENTITY FULL")
            pg.execute("UPDATE bookings SET party_size = 3 WHERE id = %s", (booking,))
            _, default_message, full_message = reader.collect(key_has("id", booking), 3)
            default, full = default_message.decode(), full_message.decode()
            assert isinstance(default, ChangeEvent)
            assert isinstance(default.after, Booking)
            assert default.op is Op.UPDATE
            assert default.before is None
            assert not default.before_available
            assert default.after.status == "confirmed"
            assert default.after.details is UNAVAILABLE
            assert isinstance(full, ChangeEvent)
            assert full.op is Op.UPDATE
            assert isinstance(full.after, Booking)
            assert isinstance(full.before, Booking)
            assert full.before_available
            assert full.after.party_size == 3
            # REPLICA IDENTITY FULL: Debezium fills the unchanged TOASTed value from the old tuple
            assert full.before.details == big
            assert full.after.details == big

            # 3. a truncate: op t, no rows, on the table's own topic
            pg.execute("INSERT INTO observability_events (source, event_type, context) VALUES ('t', 'e', '{}')")
            pg.execute("TRUNCATE observability_events")
            obs_topic = f"{isolated.prefix}.public.observability_events"

            def truncate(m: RawMessage) -> bool:
                return m.topic == obs_topic and m.value is not None and b'"op":"t"' in m.value

            (truncate_message,) = reader.collect(truncate, 1)
            event = truncate_message.decode()
            assert isinstance(event, ChangeEvent)
            assert event.op is Op.TRUNCATE
            assert event.before is None
            assert event.after is None
            assert event.source.table == "observability_events"
            # the insert before it travels on its own partition: cross-partition order is not guaranteed
            obs_records = [m.decode() for m in reader.collect(lambda m: m.topic == obs_topic, 2)]
            inserts = [r for r in obs_records if isinstance(r, ChangeEvent) and r.op is Op.CREATE]
            assert len(inserts) == 1
            assert isinstance(inserts[0].after, ObservabilityEvent)

            save_fixtures(
                capture_dir,
                "schemas_on_snapshot_update_truncate",
                [snapshot_message, default_message, full_message, *reader.collect(lambda m: m.topic == obs_topic, 2)],
            )
        finally:
            reader.close()
