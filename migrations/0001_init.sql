-- miaudit's first schema: scans, their per-tenant outcome and the verdict of every identity.
-- Migrations are append-only: never edit this file once released; add a new one.

-- One row per scan. A scan is written in one transaction, so a row here means the scan is whole.
create table scans (
    scan_id     text primary key,
    started_at  text not null,           -- RFC 3339, UTC
    finished_at text,                    -- null while running (daemon); set for recorded scans
    complete    integer not null,        -- 1 when every tenant's inventory and checks completed
    trigger     text not null,           -- schedule | manual | startup | cli
    total       integer not null default 0,
    healthy     integer not null default 0,
    orphaned    integer not null default 0,
    unknown     integer not null default 0
);

create index scans_started_at on scans (started_at);

-- Per tenant: completeness, identity count, errors and requests made per API (JSON).
create table scan_tenants (
    scan_id    text not null references scans (scan_id) on delete cascade,
    tenant_id  text not null,
    complete   integer not null,
    identities integer not null,
    errors     text not null,            -- JSON array of strings
    requests   text not null,            -- JSON object: api -> {requests, throttled, retries, failures}
    primary key (scan_id, tenant_id)
);

-- The verdict of every identity in the scan, with the evidence a support ticket needs.
create table scan_verdicts (
    scan_id         text not null references scans (scan_id) on delete cascade,
    tenant_id       text not null,
    object_id       text not null,
    app_id          text not null,
    display_name    text not null,
    identity_type   text not null,       -- system_assigned | user_assigned
    resource_id     text,
    subscription_id text,
    resource_type   text,
    verdict         text not null,       -- healthy | orphaned | unknown
    reason          text not null,
    detail          text not null,
    evidence        text not null,       -- JSON: source, status, code, request ids, checked_at
    primary key (scan_id, tenant_id, object_id)
) without rowid;

create index scan_verdicts_by_verdict on scan_verdicts (scan_id, verdict);
