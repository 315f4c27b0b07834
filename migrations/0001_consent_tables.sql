-- purposegate consent registry (CONTRACT §5) on PostgreSQL.
-- Periods are half-open [valid_from, valid_until); valid_until NULL = still in force.

CREATE TABLE IF NOT EXISTS consent_user_opt_outs (
    id          bigserial   PRIMARY KEY,
    user_id     text        NOT NULL,
    valid_from  timestamptz NOT NULL CHECK (isfinite(valid_from)),
    valid_until timestamptz CHECK (valid_until IS NULL OR (isfinite(valid_until) AND valid_until > valid_from))
);
CREATE INDEX IF NOT EXISTS consent_user_opt_outs_user_id ON consent_user_opt_outs (user_id);

CREATE TABLE IF NOT EXISTS consent_deletion_requests (
    user_id      text        PRIMARY KEY,
    requested_at timestamptz NOT NULL CHECK (isfinite(requested_at))
);

CREATE TABLE IF NOT EXISTS consent_org_opt_ins (
    id          bigserial   PRIMARY KEY,
    org_id      text        NOT NULL,
    valid_from  timestamptz NOT NULL CHECK (isfinite(valid_from)),
    valid_until timestamptz CHECK (valid_until IS NULL OR (isfinite(valid_until) AND valid_until > valid_from))
);
CREATE INDEX IF NOT EXISTS consent_org_opt_ins_org_id ON consent_org_opt_ins (org_id);
