-- purposegate: the central audit trail (CONTRACT §9). One row per record of
-- every replica's local chained log; `record` is the exact JSON line, so its
-- hash is re-derived from it. The other columns are an index over `record`
-- (`audit verify --postgres` checks that they still agree with it).
--
-- Partitioned by month on `ts`, so retention is dropping a partition. A
-- DEFAULT partition catches a record whose month has no partition yet, so an
-- INSERT-only role never needs to create one; `audit migrate` creates the
-- months ahead and moves any rows of such a month out of the default.

CREATE TABLE IF NOT EXISTS audit_records (
    instance      text        NOT NULL,
    chain         text        NOT NULL,
    seq           bigint      NOT NULL CHECK (seq > 0),
    ts            timestamptz NOT NULL,
    event         text,
    request_id    text,
    decision      text,
    reason        text,
    owner         text,
    subject       text,
    purpose       text,
    justification text,
    route         text,
    status        integer,
    record        text        NOT NULL,
    shipped_at    timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);

-- The key. PostgreSQL requires a unique index of a partitioned table to
-- contain the partition key, so it is (instance, chain, seq, ts) rather than
-- (instance, chain, seq). That is enough: `ts` is part of the record's bytes,
-- so re-shipping a record always carries the same ts and conflicts (stored
-- exactly once). Two *different* records under one (instance, chain, seq)
-- cannot both come from a correct writer (only durable records are shipped,
-- and a chain id is never reused); should a forger insert one, `audit verify
-- --postgres` names it as an inserted record.
CREATE UNIQUE INDEX IF NOT EXISTS audit_records_key
    ON audit_records (instance, chain, seq, ts);

-- `audit report`: by owner, employee or justification, in time order.
CREATE INDEX IF NOT EXISTS audit_records_owner
    ON audit_records (owner, ts) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_records_subject
    ON audit_records (subject, ts) WHERE subject IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_records_justification
    ON audit_records (justification, ts) WHERE justification IS NOT NULL;
-- A request's records (its `complete` record is joined to its decision).
CREATE INDEX IF NOT EXISTS audit_records_request
    ON audit_records (request_id) WHERE request_id IS NOT NULL;
-- Time ranges over everything (tiny; records arrive roughly in ts order).
CREATE INDEX IF NOT EXISTS audit_records_ts
    ON audit_records USING brin (ts);

CREATE TABLE IF NOT EXISTS audit_records_default
    PARTITION OF audit_records DEFAULT;

-- Lines a shipper refused to ship (their own hash does not verify, they
-- cannot be read, or their seq goes back): the central record of local
-- tampering or corruption. `after_seq` is the last good seq before the line.
CREATE TABLE IF NOT EXISTS audit_ship_refusals (
    instance     text        NOT NULL,
    chain        text        NOT NULL,
    after_seq    bigint      NOT NULL,
    seq          bigint,
    file         text        NOT NULL,
    line         bigint      NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL,
    line_sha256  text        NOT NULL,
    content      bytea       NOT NULL,
    refused_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS audit_ship_refusals_key
    ON audit_ship_refusals (instance, chain, after_seq, line_sha256);

-- Creates the monthly partitions of `months` months from `first_month` on
-- (UTC month boundaries) that do not exist yet, moving rows of such a month
-- out of the default partition first. Returns the partitions created.
-- Run by `audit migrate` (as the owner of audit_records), e.g. monthly.
CREATE OR REPLACE FUNCTION audit_ensure_partitions(first_month date, months integer)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    m    date;
    lo   timestamptz;
    hi   timestamptz;
    name text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        m := (date_trunc('month', first_month) + make_interval(months => i))::date;
        name := 'audit_records_' || to_char(m, 'YYYYMM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        lo := m::timestamp AT TIME ZONE 'UTC';
        hi := (m + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        -- Inserts that would land in the default partition wait meanwhile.
        LOCK TABLE audit_records_default IN ACCESS EXCLUSIVE MODE;
        EXECUTE format('CREATE TABLE %I (LIKE audit_records INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        EXECUTE format('INSERT INTO %I SELECT * FROM audit_records_default WHERE ts >= $1 AND ts < $2', name)
            USING lo, hi;
        DELETE FROM audit_records_default WHERE ts >= lo AND ts < hi;
        EXECUTE format('ALTER TABLE audit_records ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
        RETURN NEXT name;
    END LOOP;
END
$$;
