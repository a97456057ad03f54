-- Issue 14: role assignments whose service principal no longer exists ("Identity not found" in the
-- portal), per tenant, as the latest scan that could judge them saw them. A scan that could not ask
-- Resource Graph or Graph leaves them as they are.
create table dangling_role_assignments (
    tenant_id          text not null,
    assignment_id      text not null,
    principal_id       text not null,
    role_definition_id text not null,
    role_name          text,
    scope              text not null,
    privileged         integer not null,
    created_on         text,
    first_seen_at      text not null,
    last_seen_at       text not null,
    last_scan_id       text not null,
    primary key (tenant_id, assignment_id)
) without rowid;
