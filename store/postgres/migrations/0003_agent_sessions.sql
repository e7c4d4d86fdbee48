-- The session registry: which replica holds each device's agent stream, so a replica that
-- renders a device nudges only the replica that can push the new spec.
CREATE TABLE IF NOT EXISTS agent_sessions (
    device    TEXT   PRIMARY KEY,
    replica   TEXT   NOT NULL,
    opened_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS agent_sessions_replica ON agent_sessions (replica);
