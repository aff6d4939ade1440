-- Dynamic credentials. A secret's kind: `static` (a value handed out as it is) or
-- `postgres-dynamic` (the configuration a per-task database role is minted from).
ALTER TABLE secrets ADD COLUMN kind TEXT NOT NULL DEFAULT 'static'
    CONSTRAINT secrets_kind_check CHECK (kind IN ('static', 'postgres-dynamic'));

-- A credential minted for one task, kept until it is dropped at its target so that any server,
-- after any restart, can drop it. `credential_*` is the handed-out credential sealed under the
-- master key (which never enters the database). Written before the credential is created.
CREATE TABLE leases (
    id                     TEXT NOT NULL,
    secret                 TEXT NOT NULL,
    secret_version         BIGINT NOT NULL CHECK (secret_version >= 1),
    task                   TEXT NOT NULL,
    role                   TEXT NOT NULL,
    credential_wrapped_key BYTEA NOT NULL,
    credential_key_nonce   BYTEA NOT NULL,
    credential_nonce       BYTEA NOT NULL,
    credential_ciphertext  BYTEA NOT NULL,
    created_at_ms          BIGINT NOT NULL,
    expires_at_ms          BIGINT NOT NULL,
    dropped_at_ms          BIGINT,
    drop_reason            TEXT,
    CONSTRAINT leases_pkey PRIMARY KEY (id),
    CONSTRAINT leases_task_fkey FOREIGN KEY (task) REFERENCES tasks (id),
    CONSTRAINT leases_dropped_check CHECK ((dropped_at_ms IS NULL) = (drop_reason IS NULL))
);

-- At most one undropped lease per (secret, task).
CREATE UNIQUE INDEX leases_undropped_by_secret_task ON leases (secret, task) WHERE dropped_at_ms IS NULL;
CREATE INDEX leases_by_task ON leases (task, created_at_ms);
CREATE INDEX leases_by_created ON leases (created_at_ms);
CREATE INDEX leases_undropped_by_expiry ON leases (expires_at_ms) WHERE dropped_at_ms IS NULL;
