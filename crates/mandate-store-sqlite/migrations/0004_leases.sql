-- Dynamic credentials. A secret's kind: `static` (a value handed out as it is) or
-- `postgres-dynamic` (the configuration a per-task database role is minted from).
ALTER TABLE secrets ADD COLUMN kind TEXT NOT NULL DEFAULT 'static' CHECK (kind IN ('static', 'postgres-dynamic'));

-- A credential minted for one task, kept until it is dropped at its target so that any process,
-- after any restart, can drop it. `credential_*` is the handed-out credential sealed under the
-- master key (which never enters the database). Written before the credential is created.
CREATE TABLE leases (
    id                    TEXT PRIMARY KEY,
    secret                TEXT NOT NULL,
    secret_version        INTEGER NOT NULL CHECK (secret_version >= 1),
    task                  TEXT NOT NULL REFERENCES tasks (id),
    role                  TEXT NOT NULL,
    credential_wrapped_key BLOB NOT NULL,
    credential_key_nonce  BLOB NOT NULL,
    credential_nonce      BLOB NOT NULL,
    credential_ciphertext BLOB NOT NULL,
    created_at_ms         INTEGER NOT NULL,
    expires_at_ms         INTEGER NOT NULL,
    dropped_at_ms         INTEGER,
    drop_reason           TEXT,
    CHECK ((dropped_at_ms IS NULL) = (drop_reason IS NULL))
) STRICT;

-- At most one undropped lease per (secret, task).
CREATE UNIQUE INDEX leases_undropped_by_secret_task ON leases (secret, task) WHERE dropped_at_ms IS NULL;
CREATE INDEX leases_by_task ON leases (task, created_at_ms);
CREATE INDEX leases_by_created ON leases (created_at_ms);
CREATE INDEX leases_undropped_by_expiry ON leases (expires_at_ms) WHERE dropped_at_ms IS NULL;
