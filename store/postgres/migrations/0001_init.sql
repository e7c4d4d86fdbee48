-- Times are Unix nanoseconds (BIGINT). Objects are deterministic protobuf binary (BYTEA).
-- Every statement is idempotent, because a migration that ran but was not recorded (a crash
-- between the two) runs again. The tables match the SQLite backend's schema, apart from the
-- change log's key.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- spec holds the object without metadata, status, kind and api_version: for most kinds that is
-- just the spec field, and for Event it is the event's own fields.
CREATE TABLE IF NOT EXISTS resources (
    kind             TEXT   NOT NULL,
    name             TEXT   NOT NULL,
    labels           TEXT   NOT NULL DEFAULT '{}',
    annotations      TEXT   NOT NULL DEFAULT '{}',
    owner            TEXT   NOT NULL DEFAULT '',
    generation       BIGINT NOT NULL,
    resource_version BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    deleted_at       BIGINT,
    spec             BYTEA  NOT NULL,
    status           BYTEA,
    PRIMARY KEY (kind, name)
);

CREATE INDEX IF NOT EXISTS resources_owner ON resources (kind, owner);

-- The change log is keyed by a random UUID, so that concurrent writers insert into different
-- parts of the key space, and the version is only indexed. Versions are unique in practice
-- but not enforced, see doc.go.
CREATE TABLE IF NOT EXISTS changes (
    id         UUID     PRIMARY KEY,
    version    BIGINT   NOT NULL,
    kind       TEXT     NOT NULL,
    name       TEXT     NOT NULL,
    type       SMALLINT NOT NULL,
    object     BYTEA    NOT NULL,
    created_at BIGINT   NOT NULL
);

CREATE INDEX IF NOT EXISTS changes_version ON changes (version);
CREATE INDEX IF NOT EXISTS changes_kind ON changes (kind, version);

CREATE TABLE IF NOT EXISTS device_last_seen (
    name    TEXT   PRIMARY KEY,
    seen_at BIGINT NOT NULL
);

-- A deleted rendered spec keeps its row with an empty content_hash and spec, so that a device
-- created again under the same name continues from the old version.
CREATE TABLE IF NOT EXISTS rendered_devices (
    name         TEXT   PRIMARY KEY,
    version      BIGINT NOT NULL,
    content_hash TEXT   NOT NULL,
    spec         BYTEA  NOT NULL
);

CREATE TABLE IF NOT EXISTS tasks (
    kind       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    shard      INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    rerun      BOOLEAN NOT NULL DEFAULT false,
    last_error TEXT    NOT NULL DEFAULT '',
    run_at     BIGINT  NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE INDEX IF NOT EXISTS tasks_claim ON tasks (state, shard, run_at);

CREATE TABLE IF NOT EXISTS shard_leases (
    shard      INTEGER PRIMARY KEY,
    owner      TEXT    NOT NULL,
    epoch      BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);

CREATE TABLE IF NOT EXISTS replicas (
    id               TEXT   PRIMARY KEY,
    address          TEXT   NOT NULL,
    started_at       BIGINT NOT NULL,
    heartbeat_at     BIGINT NOT NULL,
    connected_agents BIGINT NOT NULL DEFAULT 0
);
