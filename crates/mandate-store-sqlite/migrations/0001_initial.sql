-- Mandate store, schema version 1.
--
-- Fields are columns where they are filtered, joined or ordered on, and JSON text where they
-- are only read back whole. Every table is STRICT so a value of the wrong type is refused.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Admin API tokens. Only the SHA-256 of a token's secret is stored.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    label         TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
) STRICT;

CREATE TABLE agents (
    name          TEXT PRIMARY KEY,
    spiffe_id     TEXT NOT NULL,
    owner         TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    attributes    TEXT NOT NULL,  -- JSON object of strings
    public_jwk    TEXT,           -- JSON (RFC 7517 key)
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER
) STRICT;

CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    agent         TEXT NOT NULL REFERENCES agents (name),
    status        TEXT NOT NULL CHECK (status IN ('live', 'completed', 'revoked', 'expired')),
    intent        TEXT NOT NULL,  -- JSON (mandate_core::Intent)
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    mandate_jti   TEXT NOT NULL,
    parent_id     TEXT REFERENCES tasks (id),
    root_id       TEXT NOT NULL,
    depth         INTEGER NOT NULL CHECK (depth >= 0),
    ended         TEXT            -- JSON (mandate_core::TaskEnd)
) STRICT;

CREATE INDEX tasks_by_agent ON tasks (agent, created_at_ms);
CREATE INDEX tasks_by_created ON tasks (created_at_ms);
CREATE INDEX tasks_by_root ON tasks (root_id, created_at_ms);
CREATE INDEX tasks_by_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_live_by_expiry ON tasks (expires_at_ms) WHERE status = 'live';

-- Attestation replay protection: each (issuer, jti) once until it expires.
CREATE TABLE used_jtis (
    issuer        TEXT NOT NULL,
    jti           TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
) STRICT, WITHOUT ROWID;

CREATE INDEX used_jtis_by_expiry ON used_jtis (expires_at_ms);

CREATE TABLE issuers (
    issuer        TEXT PRIMARY KEY,
    audience      TEXT NOT NULL,
    jwks          TEXT NOT NULL,  -- JSON (RFC 7517 key set)
    jwks_url      TEXT,
    rules         TEXT NOT NULL,  -- JSON array of claim rules
    created_at_ms INTEGER NOT NULL
) STRICT;

-- Cedar entity data for non-agent subjects: one row.
CREATE TABLE entities (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    json TEXT NOT NULL
) STRICT;

-- The audit trail. Names and columns are a contract: verification reads them as they are.
-- `body` is the authoritative record; the other columns are copies for querying, checked
-- against the body on verification.
CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY,
    ts_ms     INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    agent     TEXT,
    task      TEXT,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;

CREATE INDEX audit_events_by_task ON audit_events (task);
CREATE INDEX audit_events_by_agent ON audit_events (agent);
CREATE INDEX audit_events_by_kind ON audit_events (kind);

CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL,
    kid       TEXT NOT NULL,
    signature TEXT NOT NULL
) STRICT;
