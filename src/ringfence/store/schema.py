"""The SQLite store's schema. Bump SCHEMA_VERSION and add a step to MIGRATIONS to change it."""

from __future__ import annotations

SCHEMA_VERSION = 17

MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    rule_id TEXT NOT NULL,
    rule_version TEXT NOT NULL,
    severity TEXT NOT NULL,
    audience TEXT NOT NULL,
    status TEXT NOT NULL,
    customer_id TEXT,
    dedup_key TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    labels TEXT NOT NULL,
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    evidence TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    count INTEGER NOT NULL,
    assignee TEXT
);
CREATE INDEX alerts_rule_key ON alerts (rule_id, dedup_key, status);
CREATE INDEX alerts_customer ON alerts (customer_id, seq);
CREATE INDEX alerts_status ON alerts (status, seq);

CREATE TABLE alert_history (
    alert_id TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, at);

CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    last_used_at REAL
);

CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);

CREATE TABLE processor_offsets (name TEXT PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE watermarks (partition INTEGER PRIMARY KEY, max_event_time REAL NOT NULL);
CREATE TABLE feature_state (
    feature TEXT NOT NULL,
    key TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (feature, key)
) WITHOUT ROWID;

CREATE TABLE late_events (
    offset INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    source TEXT NOT NULL,
    type TEXT NOT NULL,
    customer_id TEXT,
    occurred_at REAL NOT NULL,
    watermark REAL NOT NULL,
    ingested_at REAL NOT NULL
);

CREATE TABLE rule_hits (
    rule_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (rule_id, mode)
) WITHOUT ROWID;
""",
    2: """
CREATE TABLE rule_packs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE lists (
    name TEXT PRIMARY KEY,
    items TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL
);
""",
    3: """
CREATE TABLE alert_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE dispatcher_cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE alert_groups (group_key TEXT PRIMARY KEY, state BLOB NOT NULL, next_flush_at REAL NOT NULL);
CREATE INDEX alert_groups_due ON alert_groups (next_flush_at);
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    group_key TEXT NOT NULL,
    receiver TEXT NOT NULL,
    status TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE TABLE alert_comments (alert_id TEXT NOT NULL, at REAL NOT NULL, author TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX alert_comments_alert ON alert_comments (alert_id, at);
""",
    4: """
ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
""",
    5: """
ALTER TABLE api_keys ADD COLUMN audiences TEXT NOT NULL DEFAULT '';
CREATE TABLE sessions (
    id_hash BLOB PRIMARY KEY,
    key_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
""",
    6: """
ALTER TABLE api_keys ADD COLUMN signing_key TEXT NOT NULL DEFAULT '';
""",
    7: """
CREATE TABLE rule_hits_by_minute (
    rule_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    minute INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (rule_id, mode, minute)
) WITHOUT ROWID;
""",
    8: """
CREATE TABLE state_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, changes BLOB NOT NULL);
""",
    9: """
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    partition INTEGER NOT NULL,
    log_offset INTEGER NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    quarantined_at REAL NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    pack_version TEXT NOT NULL,
    body BLOB NOT NULL,
    record_key BLOB,
    record_headers BLOB,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    redriven_at REAL,
    redriven_by TEXT,
    UNIQUE (origin, partition, log_offset)
);
CREATE INDEX quarantine_status ON quarantine (status, id);
""",
    10: """
ALTER TABLE api_keys ADD COLUMN sources TEXT NOT NULL DEFAULT '';
""",
    # engine state: snapshots written a part at a time, the changelog replayed over them
    11: """
CREATE TABLE snapshots (gen INTEGER PRIMARY KEY, since INTEGER NOT NULL, complete INTEGER NOT NULL);
CREATE TABLE snapshot_parts (
    gen INTEGER NOT NULL,
    part INTEGER NOT NULL,
    packed BLOB NOT NULL,
    PRIMARY KEY (gen, part)
);
""",
    # the dispatcher's housekeeping, in a write transaction every 10 s, reads by index:
    # retention's sent notifications by send time, auto-resolve's quiet alerts among the
    # rule's active ones (updated_at, which every hit rewrites, stays out of the index)
    12: """
CREATE INDEX alerts_quiet ON alerts (rule_id, status);
CREATE INDEX notifications_sent ON notifications (status, sent_at);
""",
    # FX rate tables, every version kept; the newest is the one ingest converts with.
    # file_digest: the settings' rates file a table was loaded from ('' for the API's and CLI's)
    13: """
CREATE TABLE fx_tables (
    version INTEGER PRIMARY KEY AUTOINCREMENT,
    reference TEXT NOT NULL,
    rates TEXT NOT NULL,
    loaded_at REAL NOT NULL,
    loaded_by TEXT NOT NULL,
    file_digest TEXT NOT NULL DEFAULT ''
);
""",
    # retention finds the ended silences by their end (they page by rowid)
    14: """
CREATE INDEX silences_ends ON silences (ends_at);
""",
    15: """
CREATE INDEX notifications_receiver_due ON notifications (status, receiver, next_attempt_at);
""",
    # the notification log listed by status, newest first, by index: it read and sorted every
    # notification of the status (2 s at 900,000 sent, a re-test); PostgreSQL's has (status, seq)
    16: """
CREATE INDEX notifications_status ON notifications (status);
""",
    # budgets every API process shares, a restart too (ringfence.store.budgets): what a key's
    # changes may add to the store an hour; a row a bucket not full, forgotten when it is
    17: """
CREATE TABLE budgets (name TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL, full_at REAL NOT NULL);
CREATE INDEX budgets_full_at ON budgets (full_at);
""",
}
