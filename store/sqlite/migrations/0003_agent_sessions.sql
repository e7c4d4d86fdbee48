-- The session registry: which replica holds each device's agent stream, so a replica that
-- renders a device nudges only the replica that can push the new spec.
CREATE TABLE agent_sessions (
    device    TEXT    PRIMARY KEY,
    replica   TEXT    NOT NULL,
    opened_at INTEGER NOT NULL
);

CREATE INDEX agent_sessions_replica ON agent_sessions (replica);
