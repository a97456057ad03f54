-- Identities that must be checked by ARM whatever Resource Graph shows: those with an open finding
-- (suspected, confirmed, acknowledged). Resource Graph is never an authoritative answer, so it may not
-- resolve a finding (`resource_restored` needs ARM's word).
create table scan_must_check (
    scan_id    text not null,
    tenant_id  text not null,
    object_key text not null,
    primary key (scan_id, tenant_id, object_key)
) without rowid;

-- Resource Graph rows by the principal they carry: does any other resource carry this identity's
-- principal (the resource moved, and alternativeNames still names the old id)?
create index scan_arg_rows_by_principal on scan_arg_rows (scan_id, tenant_id, principal_key);
