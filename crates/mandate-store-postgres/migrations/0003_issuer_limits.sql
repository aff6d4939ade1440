-- Per-issuer token rules: the longest lifetime of a token (NULL: the server's attestation
-- limit) and whether a token without `jti` may be used (and reused).
ALTER TABLE issuers ADD COLUMN max_token_lifetime_secs BIGINT CHECK (max_token_lifetime_secs IS NULL OR max_token_lifetime_secs > 0);
ALTER TABLE issuers ADD COLUMN allow_token_reuse BOOLEAN NOT NULL DEFAULT FALSE;
