-- Approval requests: a decision a policy marked `@approval("required")` waits for a person.
-- `body` is the whole record (mandate_core::Approval as JSON); the columns are the fields
-- filtered on, kept equal to the body by every write.
CREATE TABLE approvals (
    id            TEXT PRIMARY KEY,
    task          TEXT NOT NULL REFERENCES tasks (id),
    binding       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    body          TEXT NOT NULL
) STRICT;

CREATE INDEX approvals_by_binding ON approvals (binding, created_at_ms) WHERE status IN ('pending', 'approved');
CREATE INDEX approvals_by_created ON approvals (created_at_ms);
CREATE INDEX approvals_by_task ON approvals (task, created_at_ms);
CREATE INDEX approvals_open_by_expiry ON approvals (expires_at_ms) WHERE status IN ('pending', 'approved');
