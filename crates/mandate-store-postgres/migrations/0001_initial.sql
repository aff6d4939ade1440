-- Mandate store (PostgreSQL), schema version 1: the same records as the embedded store, in the
-- same shape.
--
-- Fields are columns where they are filtered, joined or ordered on, and JSON text where they
-- are only read back whole. JSON is kept as TEXT, never JSONB: it must read back byte for byte
-- (the audit `body` is hashed exactly as stored). Constraint names are a contract: the store
-- maps them to the record a refusal names.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Admin API tokens. Only the SHA-256 of a token's secret is stored.
CREATE TABLE api_tokens (
    id            TEXT NOT NULL,
    role          TEXT NOT NULL,
    label         TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT,
    CONSTRAINT api_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT api_tokens_secret_hash_key UNIQUE (secret_hash)
);

CREATE TABLE agents (
    name          TEXT NOT NULL,
    spiffe_id     TEXT NOT NULL,
    owner         TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    attributes    TEXT NOT NULL,  -- JSON object of strings
    public_jwk    TEXT,           -- JSON (RFC 7517 key)
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT,
    CONSTRAINT agents_pkey PRIMARY KEY (name)
);

CREATE TABLE tasks (
    id            TEXT NOT NULL,
    agent         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('live', 'completed', 'revoked', 'expired')),
    intent        TEXT NOT NULL,  -- JSON (mandate_core::Intent)
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    mandate_jti   TEXT NOT NULL,
    parent_id     TEXT,
    root_id       TEXT NOT NULL,
    depth         BIGINT NOT NULL CHECK (depth >= 0),
    ended         TEXT,           -- JSON (mandate_core::TaskEnd)
    CONSTRAINT tasks_pkey PRIMARY KEY (id),
    CONSTRAINT tasks_agent_fkey FOREIGN KEY (agent) REFERENCES agents (name),
    CONSTRAINT tasks_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES tasks (id)
);

CREATE INDEX tasks_by_agent ON tasks (agent, created_at_ms);
CREATE INDEX tasks_by_created ON tasks (created_at_ms);
CREATE INDEX tasks_by_root ON tasks (root_id, created_at_ms);
CREATE INDEX tasks_by_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_live_by_expiry ON tasks (expires_at_ms) WHERE status = 'live';

-- Attestation replay protection: each (issuer, jti) once until it expires.
CREATE TABLE used_jtis (
    issuer        TEXT NOT NULL,
    jti           TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    CONSTRAINT used_jtis_pkey PRIMARY KEY (issuer, jti)
);

CREATE INDEX used_jtis_by_expiry ON used_jtis (expires_at_ms);

CREATE TABLE issuers (
    issuer        TEXT NOT NULL,
    audience      TEXT NOT NULL,
    jwks          TEXT NOT NULL,  -- JSON (RFC 7517 key set)
    jwks_url      TEXT,
    rules         TEXT NOT NULL,  -- JSON array of claim rules
    created_at_ms BIGINT NOT NULL,
    CONSTRAINT issuers_pkey PRIMARY KEY (issuer)
);

-- Cedar entity data for non-agent subjects: one row.
CREATE TABLE entities (
    id   SMALLINT NOT NULL CHECK (id = 1),
    json TEXT NOT NULL,
    CONSTRAINT entities_pkey PRIMARY KEY (id)
);

-- The audit trail. Names and columns are a contract: verification reads them as they are.
-- `body` is the authoritative record; the other columns are copies for querying, checked
-- against the body on verification.
CREATE TABLE audit_events (
    seq       BIGINT NOT NULL,
    ts_ms     BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    agent     TEXT,
    task      TEXT,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    CONSTRAINT audit_events_pkey PRIMARY KEY (seq)
);

CREATE INDEX audit_events_by_task ON audit_events (task);
CREATE INDEX audit_events_by_agent ON audit_events (agent);
CREATE INDEX audit_events_by_kind ON audit_events (kind);

CREATE TABLE audit_checkpoints (
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL,
    ts_ms     BIGINT NOT NULL,
    kid       TEXT NOT NULL,
    signature TEXT NOT NULL,
    CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (seq)
);

-- Brokered secrets: every version kept, the value sealed (AES-256-GCM under a per-version data
-- key wrapped by the master key, which never enters the database).
CREATE TABLE secrets (
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL CHECK (version >= 1),
    description   TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    wrapped_key   BYTEA NOT NULL,
    key_nonce     BYTEA NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    CONSTRAINT secrets_pkey PRIMARY KEY (name, version)
);

-- Approval requests: a decision a policy marked `@approval("required")` waits for a person.
-- `body` is the whole record (mandate_core::Approval as JSON); the columns are the fields
-- filtered on, kept equal to the body by every write.
CREATE TABLE approvals (
    id            TEXT NOT NULL,
    task          TEXT NOT NULL,
    binding       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    body          TEXT NOT NULL,
    CONSTRAINT approvals_pkey PRIMARY KEY (id),
    CONSTRAINT approvals_task_fkey FOREIGN KEY (task) REFERENCES tasks (id)
);

CREATE INDEX approvals_by_binding ON approvals (binding, created_at_ms) WHERE status IN ('pending', 'approved');
CREATE INDEX approvals_by_created ON approvals (created_at_ms);
CREATE INDEX approvals_by_task ON approvals (task, created_at_ms);
CREATE INDEX approvals_open_by_expiry ON approvals (expires_at_ms) WHERE status IN ('pending', 'approved');
