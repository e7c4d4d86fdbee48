-- Times are Unix nanoseconds (INTEGER). Objects are deterministic protobuf binary (BLOB).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- spec holds the object without metadata, status, kind and api_version: for most kinds that is
-- just the spec field, and for Event it is the event's own fields.
CREATE TABLE resources (
    kind             TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    labels           TEXT    NOT NULL DEFAULT '{}',
    annotations      TEXT    NOT NULL DEFAULT '{}',
    owner            TEXT    NOT NULL DEFAULT '',
    generation       INTEGER NOT NULL,
    resource_version INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    deleted_at       INTEGER,
    spec             BLOB    NOT NULL,
    status           BLOB,
    PRIMARY KEY (kind, name)
);

CREATE INDEX resources_owner ON resources (kind, owner);

CREATE TABLE changes (
    version    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    type       INTEGER NOT NULL,
    object     BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX changes_kind ON changes (kind, version);

CREATE TABLE device_last_seen (
    name    TEXT    PRIMARY KEY,
    seen_at INTEGER NOT NULL
);

CREATE TABLE rendered_devices (
    name         TEXT    PRIMARY KEY,
    version      INTEGER NOT NULL,
    content_hash TEXT    NOT NULL,
    spec         BLOB    NOT NULL
);

CREATE TABLE tasks (
    kind       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    shard      INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    rerun      INTEGER NOT NULL DEFAULT 0,
    last_error TEXT    NOT NULL DEFAULT '',
    run_at     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE INDEX tasks_claim ON tasks (state, shard, run_at);

CREATE TABLE shard_leases (
    shard      INTEGER PRIMARY KEY,
    owner      TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE replicas (
    id               TEXT    PRIMARY KEY,
    address          TEXT    NOT NULL,
    started_at       INTEGER NOT NULL,
    heartbeat_at     INTEGER NOT NULL,
    connected_agents INTEGER NOT NULL DEFAULT 0
);
