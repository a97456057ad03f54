-- Issue 14: the allowlist. Suppressions made through the API (those of the configuration are not
-- stored), and, per finding, the suppression that covers it now (null: none). Recomputed after every
-- recorded scan, when suppressions change, and when one expires.
create table suppressions (
    id              text primary key,
    tenant_id       text,
    subscription_id text,
    object_id       text,
    resource_id     text,          -- pattern, '*' any run of characters
    reason          text not null,
    owner           text not null,
    expires_at      text,          -- RFC 3339
    created_at      text not null
);

alter table findings add column suppressed_by text;

-- The partial index of findings with a state keeps covering the counts per state, which now read
-- suppressed_by too.
drop index findings_by_state;
create index findings_by_state on findings (tenant_id, object_id, state, suppressed_by) where state is not null;
