-- Dead-letter triage: a dead letter a person has looked at and parked (`allocguard dlq park`), keyed by where it sits
-- in the dead-letter topic (the topic itself is never rewritten). `dlq replay` skips parked ones; `dlq unpark` lets
-- them be replayed again.
CREATE TABLE IF NOT EXISTS allocguard.dlq_triage (
  topic text NOT NULL,
  partition integer NOT NULL,
  "offset" bigint NOT NULL,
  status text NOT NULL DEFAULT 'parked' CONSTRAINT dlq_triage_status_check CHECK (status IN ('parked')),
  note text,
  decided_by text NOT NULL,
  decided_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, partition, "offset")
);
GRANT SELECT, INSERT, UPDATE, DELETE ON allocguard.dlq_triage TO allocguard_remediator;
