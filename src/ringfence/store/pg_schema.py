"""The PostgreSQL store's schema: the SQLite schema's tables, in PostgreSQL's types.

Versions are PostgreSQL's own (``schema_migrations``); ``ringfence db migrate`` applies the
missing ones. Add a step to change it; never edit a released one.
"""

from __future__ import annotations

PG_SCHEMA_VERSION = 11

PG_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE alerts (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    rule_id TEXT NOT NULL,
    rule_version TEXT NOT NULL,
    severity TEXT NOT NULL,
    audience TEXT NOT NULL,
    status TEXT NOT NULL,
    customer_id TEXT,
    dedup_key TEXT NOT NULL,
    occurrence BIGINT NOT NULL,
    labels TEXT NOT NULL,
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    evidence TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    count BIGINT NOT NULL,
    assignee TEXT
);
CREATE INDEX alerts_rule_key ON alerts (rule_id, dedup_key, status);
CREATE INDEX alerts_customer ON alerts (customer_id, seq);
CREATE INDEX alerts_status ON alerts (status, seq);
CREATE TABLE alert_history (
    alert_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT,
    seq BIGSERIAL
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, at);
CREATE TABLE alert_comments (
    alert_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    seq BIGSERIAL
);
CREATE INDEX alert_comments_alert ON alert_comments (alert_id, at);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    salt BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    scopes TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION,
    audiences TEXT NOT NULL DEFAULT '',
    signing_key TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
CREATE TABLE sessions (
    id_hash BYTEA PRIMARY KEY,
    key_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    hash TEXT NOT NULL DEFAULT ''
);
CREATE TABLE audit_head (id BIGINT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE processor_offsets (name TEXT PRIMARY KEY, "offset" BIGINT NOT NULL);
CREATE TABLE watermarks (partition BIGINT PRIMARY KEY, max_event_time DOUBLE PRECISION NOT NULL);
CREATE TABLE feature_state (feature TEXT NOT NULL, key TEXT NOT NULL, state BYTEA NOT NULL, PRIMARY KEY (feature, key));
CREATE TABLE state_log (seq BIGSERIAL PRIMARY KEY, changes BYTEA NOT NULL);
CREATE TABLE late_events (
    "offset" BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL,
    source TEXT NOT NULL,
    type TEXT NOT NULL,
    customer_id TEXT,
    occurred_at DOUBLE PRECISION NOT NULL,
    watermark DOUBLE PRECISION NOT NULL,
    ingested_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE rule_hits (rule_id TEXT NOT NULL, mode TEXT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (rule_id, mode));
CREATE TABLE rule_hits_by_minute (
    rule_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    minute BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    PRIMARY KEY (rule_id, mode, minute)
);
CREATE TABLE rule_packs (
    seq BIGSERIAL PRIMARY KEY,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    created_by TEXT NOT NULL,
    active BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE lists (
    name TEXT PRIMARY KEY,
    items TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE alert_events (
    seq BIGSERIAL PRIMARY KEY,
    alert_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE TABLE dispatcher_cursor (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at DOUBLE PRECISION NOT NULL,
    ends_at DOUBLE PRECISION NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE alert_groups (group_key TEXT PRIMARY KEY, state BYTEA NOT NULL, next_flush_at DOUBLE PRECISION NOT NULL);
CREATE INDEX alert_groups_due ON alert_groups (next_flush_at);
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    group_key TEXT NOT NULL,
    receiver TEXT NOT NULL,
    status TEXT NOT NULL,
    payload BYTEA NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
""",
    2: """
CREATE TABLE quarantine (
    id BIGSERIAL PRIMARY KEY,
    origin TEXT NOT NULL,
    partition BIGINT NOT NULL,
    log_offset BIGINT NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    ingested_at DOUBLE PRECISION NOT NULL,
    quarantined_at DOUBLE PRECISION NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    pack_version TEXT NOT NULL,
    body BYTEA NOT NULL,
    record_key BYTEA,
    record_headers BYTEA,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    redriven_at DOUBLE PRECISION,
    redriven_by TEXT,
    UNIQUE (origin, partition, log_offset)
);
CREATE INDEX quarantine_status ON quarantine (status, id);
""",
    3: """
ALTER TABLE api_keys ADD COLUMN sources TEXT NOT NULL DEFAULT '';
""",
    # the notification log pages by insertion order: one flush writes many rows at one created_at
    4: """
ALTER TABLE notifications ADD COLUMN seq BIGSERIAL;
CREATE UNIQUE INDEX notifications_seq ON notifications (seq);
CREATE INDEX notifications_status ON notifications (status, seq);
""",
    # engine state: snapshots written a part at a time, the changelog replayed over them
    5: """
CREATE TABLE snapshots (gen BIGINT PRIMARY KEY, since BIGINT NOT NULL, complete BIGINT NOT NULL);
CREATE TABLE snapshot_parts (gen BIGINT NOT NULL, part BIGINT NOT NULL, packed BYTEA NOT NULL, PRIMARY KEY (gen, part));
""",
    # the dispatcher's housekeeping, in a write transaction every 10 s, reads by index:
    # retention's sent notifications by send time, auto-resolve's quiet alerts among the
    # rule's active ones (updated_at, which every hit rewrites, stays out of the index)
    6: """
CREATE INDEX alerts_quiet ON alerts (rule_id, status);
CREATE INDEX notifications_sent ON notifications (status, sent_at);
""",
    # FX rate tables, every version kept; the newest is the one ingest converts with.
    # file_digest: the settings' rates file a table was loaded from ('' for the API's and CLI's)
    7: """
CREATE TABLE fx_tables (
    version BIGSERIAL PRIMARY KEY,
    reference TEXT NOT NULL,
    rates TEXT NOT NULL,
    loaded_at DOUBLE PRECISION NOT NULL,
    loaded_by TEXT NOT NULL,
    file_digest TEXT NOT NULL DEFAULT ''
);
""",
    # silences page by insertion order, those already there numbered by creation (a BIGSERIAL
    # added would number them as the table is stored); retention finds the ended silences by
    # their end, and the late events by when they were ingested
    8: """
ALTER TABLE silences ADD COLUMN seq BIGINT;
UPDATE silences SET seq = numbered.n
    FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM silences) AS numbered
    WHERE silences.id = numbered.id;
CREATE SEQUENCE silences_seq_seq OWNED BY silences.seq;
SELECT setval('silences_seq_seq', coalesce((SELECT max(seq) FROM silences), 0) + 1, false);
ALTER TABLE silences ALTER COLUMN seq SET DEFAULT nextval('silences_seq_seq');
ALTER TABLE silences ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX silences_seq ON silences (seq);
CREATE INDEX silences_ends ON silences (ends_at);
CREATE INDEX late_events_ingested ON late_events (ingested_at);
""",
    9: """
CREATE INDEX notifications_receiver_due ON notifications (status, receiver, next_attempt_at);
""",
    # the kafka runtime's counters that only one service's processes see (ingest's rejected
    # events, the workers' duplicates and late ones, dispatch's failed sends), each process
    # adding what it counted, for /v1/stats (ringfence.store.service_counters); and the live
    # stream's changes, which dispatch takes in and every api process shows (runtimes.kafka.alert_feed)
    10: """
CREATE TABLE service_counters (
    name TEXT PRIMARY KEY,
    value DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE alert_feed (seq BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, event TEXT NOT NULL);
CREATE INDEX alert_feed_at ON alert_feed (at);
""",
    # budgets every api process shares, a restart too (ringfence.store.budgets)
    11: """
CREATE TABLE budgets (
    name TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    full_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX budgets_full_at ON budgets (full_at);
""",
}

# INSERT OR REPLACE becomes an upsert on the table's primary key
PRIMARY_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "audit_head": (("id",), ("seq", "hash")),
    "dispatcher_cursor": (("name",), ("seq",)),
    "alert_groups": (("group_key",), ("state", "next_flush_at")),
    "lists": (("name",), ("items", "version", "updated_at", "updated_by")),
    "watermarks": (("partition",), ("max_event_time",)),
    "processor_offsets": (("name",), ('"offset"',)),
    "feature_state": (("feature", "key"), ("state",)),
    "budgets": (("name",), ("tokens", "at", "full_at")),
}
