-- Brokered secrets: every version kept, the value sealed (AES-256-GCM under a per-version data
-- key wrapped by the master key, which never enters the database).
CREATE TABLE secrets (
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    description   TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    wrapped_key   BLOB NOT NULL,
    key_nonce     BLOB NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;
