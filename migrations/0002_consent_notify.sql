-- Every change to a consent row notifies the proxies on channel
-- purposegate_consent with payload '<kind>:<id>' (kind: user | org), so each
-- replica drops its cached entry at once. TG_ARGV: kind, id column.

CREATE OR REPLACE FUNCTION purposegate_consent_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_id text;
    new_id text;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_id := to_jsonb(OLD) ->> TG_ARGV[1];
        PERFORM pg_notify('purposegate_consent', TG_ARGV[0] || ':' || old_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_id := to_jsonb(NEW) ->> TG_ARGV[1];
        IF new_id IS DISTINCT FROM old_id THEN
            PERFORM pg_notify('purposegate_consent', TG_ARGV[0] || ':' || new_id);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS consent_user_opt_outs_notify ON consent_user_opt_outs;
CREATE TRIGGER consent_user_opt_outs_notify
    AFTER INSERT OR UPDATE OR DELETE ON consent_user_opt_outs
    FOR EACH ROW EXECUTE FUNCTION purposegate_consent_notify('user', 'user_id');

DROP TRIGGER IF EXISTS consent_deletion_requests_notify ON consent_deletion_requests;
CREATE TRIGGER consent_deletion_requests_notify
    AFTER INSERT OR UPDATE OR DELETE ON consent_deletion_requests
    FOR EACH ROW EXECUTE FUNCTION purposegate_consent_notify('user', 'user_id');

DROP TRIGGER IF EXISTS consent_org_opt_ins_notify ON consent_org_opt_ins;
CREATE TRIGGER consent_org_opt_ins_notify
    AFTER INSERT OR UPDATE OR DELETE ON consent_org_opt_ins
    FOR EACH ROW EXECUTE FUNCTION purposegate_consent_notify('org', 'org_id');

-- TRUNCATE fires no row triggers: tell every replica to drop its whole cache.
CREATE OR REPLACE FUNCTION purposegate_consent_notify_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('purposegate_consent', '*');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS consent_user_opt_outs_truncate ON consent_user_opt_outs;
CREATE TRIGGER consent_user_opt_outs_truncate AFTER TRUNCATE ON consent_user_opt_outs
    FOR EACH STATEMENT EXECUTE FUNCTION purposegate_consent_notify_all();
DROP TRIGGER IF EXISTS consent_deletion_requests_truncate ON consent_deletion_requests;
CREATE TRIGGER consent_deletion_requests_truncate AFTER TRUNCATE ON consent_deletion_requests
    FOR EACH STATEMENT EXECUTE FUNCTION purposegate_consent_notify_all();
DROP TRIGGER IF EXISTS consent_org_opt_ins_truncate ON consent_org_opt_ins;
CREATE TRIGGER consent_org_opt_ins_truncate AFTER TRUNCATE ON consent_org_opt_ins
    FOR EACH STATEMENT EXECUTE FUNCTION purposegate_consent_notify_all();
