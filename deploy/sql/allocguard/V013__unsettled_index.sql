-- The state gauges (consumer/runtime/gauges.py) count the incidents still waiting and find the oldest of each
-- status every refresh, on every replica: with this index they read only those, not every incident ever recorded.
CREATE INDEX IF NOT EXISTS incidents_unsettled_idx ON allocguard.incidents (status, created_at)
  WHERE status IN ('open', 'manual_review', 'awaiting_approval');
