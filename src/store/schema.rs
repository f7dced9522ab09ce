//! The state file's schema: an ordered list of migrations, the index of
//! the last one applied kept in `PRAGMA user_version`.
//!
//! A released migration is never edited: state files in the field were
//! made by it, and `tests/data/state-v1.db` checks that they still open.
//! Change the schema by appending a migration.

/// Migration `i` (0-based) takes a file from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// Version 1: targets, their snapshots, and the outbox.
///
/// Times are UTC text of a fixed width (`2026-11-05T10:40:43.858000000Z`),
/// so they read well in `sqlite3` and compare correctly as strings.
const V1: &str = r#"
-- One row per (project, job type) jobwatch has scanned.
CREATE TABLE targets (
    project_id  TEXT NOT NULL,
    job_type    TEXT NOT NULL,
    -- A complete scan has been recorded: new sub-jobs are news from now on.
    baselined   INTEGER NOT NULL CHECK (baselined IN (0, 1)),
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (project_id, job_type)
) STRICT;

-- What each target's sub-jobs looked like at the last scan. `job_json` is
-- the sub-job as the API gave it; the columns beside it are copies for
-- queries and `state show`.
CREATE TABLE snapshot (
    project_id      TEXT NOT NULL,
    job_type        TEXT NOT NULL,
    sub_job_id      TEXT NOT NULL,
    job_id          TEXT,
    status          TEXT,
    error_code      TEXT,
    -- When the current status was first observed (drives `stuck`).
    since           TEXT NOT NULL,
    stuck_reported  INTEGER NOT NULL CHECK (stuck_reported IN (0, 1)),
    missing_scans   INTEGER NOT NULL CHECK (missing_scans >= 0),
    job_json        TEXT NOT NULL CHECK (json_valid(job_json)),
    PRIMARY KEY (project_id, job_type, sub_job_id),
    FOREIGN KEY (project_id, job_type) REFERENCES targets (project_id, job_type)
        ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- One row per (event, notifier): what must be delivered, and how it went.
-- Rows outlive their target (`forget-target` keeps pending alerts), so there
-- is no foreign key. AUTOINCREMENT: ids shown by `state dead` are never
-- reused after a prune.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL,
    notifier         TEXT NOT NULL CHECK (notifier <> ''),
    -- Events sharing a key may be sent as one message (route group_window).
    group_key        TEXT,
    project_id       TEXT NOT NULL,
    job_type         TEXT NOT NULL,
    sub_job_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload_json     TEXT NOT NULL CHECK (json_valid(payload_json)),
    state            TEXT NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'delivered', 'dead')),
    -- Attempts that ended (delivered, retry or dead).
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at       TEXT NOT NULL,
    -- When it last entered `pending`: creation, or a `state retry`. The
    -- dispatcher measures `delivery.max_age` from here.
    queued_at        TEXT NOT NULL,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    -- When it was delivered or declared dead.
    finished_at      TEXT,
    -- A transition re-detected after a crash or a re-baseline adds no copy.
    UNIQUE (event_id, notifier)
) STRICT;

CREATE INDEX outbox_by_state ON outbox (state, next_attempt_at);
"#;

/// Version 2: when each target's last full scan that covered its list was
/// committed (NULL: none since the upgrade), so the incremental strategy
/// knows when to reconcile, across restarts and `once` runs alike.
const V2: &str = r#"
ALTER TABLE targets ADD COLUMN full_scan_at TEXT;
"#;

/// Version 3: a parent job's sub-jobs found without reading the project's
/// whole snapshot (the per-job digest counts them at send time).
const V3: &str = r#"
CREATE INDEX snapshot_by_job ON snapshot (project_id, job_id);
"#;

/// Version 4: the history (every event observed and every delivery
/// attempt, kept for `state.keep_history`) and silences.
const V4: &str = r#"
-- Every event observed, with where the routes sent it (`routes_json`:
-- [{"route": 0, "notifier": "chat", "group_key": null, "held": null}];
-- `held` names the silence or maintenance window that kept it back).
CREATE TABLE events (
    event_id      TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL,
    job_type      TEXT NOT NULL,
    sub_job_id    TEXT NOT NULL,
    job_id        TEXT,
    observed_at   TEXT NOT NULL,
    payload_json  TEXT NOT NULL CHECK (json_valid(payload_json)),
    routes_json   TEXT NOT NULL CHECK (json_valid(routes_json))
) STRICT;
CREATE INDEX events_by_sub_job ON events (sub_job_id);
CREATE INDEX events_by_job ON events (job_id);
CREATE INDEX events_by_time ON events (observed_at);

-- Every attempt to deliver an outbox row, and every requeue of one. Kept
-- apart from the outbox, whose delivered rows are pruned sooner
-- (`delivery.keep_delivered`).
CREATE TABLE attempts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id  INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    notifier   TEXT NOT NULL,
    at         TEXT NOT NULL,
    verdict    TEXT NOT NULL CHECK (verdict IN ('delivered', 'retry', 'dead', 'requeued')),
    answer     TEXT,
    next_at    TEXT
) STRICT;
CREATE INDEX attempts_by_event ON attempts (event_id);
CREATE INDEX attempts_by_time ON attempts (at);

-- Silences: every matcher (JSON text list, `job_type=CREATE_SERVER`) must
-- match an event for it to be held, between starts_at and ends_at.
CREATE TABLE silences (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers    TEXT NOT NULL CHECK (json_valid(matchers)),
    starts_at   TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    comment     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;
"#;
