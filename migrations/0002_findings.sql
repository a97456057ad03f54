-- Findings and their lifecycle (suspected -> confirmed -> acknowledged -> resolved; unverified), with
-- the history of every transition. Also: scans get an outcome, so a scan that was running when the
-- process died is visible as abandoned rather than looking unfinished forever.

alter table scans add column outcome text not null default 'completed';  -- running | completed | incomplete | abandoned

-- One row per identity in the latest inventory (and per resolved finding kept for its history).
create table findings (
    tenant_id         text not null,
    object_id         text not null,     -- lower-case
    app_id            text not null,
    display_name      text not null,
    identity_type     text not null,
    resource_id       text,
    subscription_id   text,
    resource_type     text,
    verdict           text not null,     -- last authoritative verdict (unknown only for unverified rows)
    reason            text not null,
    detail            text not null,
    evidence          text not null,     -- JSON
    state             text,              -- null: healthy, never a finding
    episode           integer not null default 1,
    resolution        text,              -- identity_removed | resource_restored
    ticket            text,
    note              text,
    first_detected_at text,
    last_orphaned_at  text,
    confirmed_at      text,
    resolved_at       text,
    last_seen_at      text not null,
    last_scan_id      text not null,
    primary key (tenant_id, object_id)
) without rowid;

create index findings_by_state on findings (state, tenant_id, object_id);
create index findings_by_verdict on findings (verdict, tenant_id, object_id);

create table finding_history (
    id         integer primary key autoincrement,
    tenant_id  text not null,
    object_id  text not null,
    episode    integer not null,
    at         text not null,
    scan_id    text,                     -- null for an acknowledgement through the API
    from_state text,
    to_state   text not null,
    resolution text
);

create index finding_history_by_finding on finding_history (tenant_id, object_id, id);

-- Whether the tenant's Graph inventory was read to the end (resolution by removal needs it).
alter table scan_tenants add column inventory_complete integer not null default 1;
