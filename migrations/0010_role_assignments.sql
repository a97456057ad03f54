-- Issue 14: blast radius. The Azure role assignments each open orphan's principal still holds, as the
-- latest scan that could read them saw them (Resource Graph authorizationresources). Replaced for the
-- identities a scan judged orphaned and read; dropped when the finding is no longer an open orphan.
create table role_assignments (
    tenant_id          text not null,
    object_id          text not null,     -- lower-case
    assignment_id      text not null,
    role_definition_id text not null,
    role_name          text,              -- null when the role's definition was not shown
    scope              text not null,
    privileged         integer not null,  -- Owner, Contributor, User Access Administrator, RBAC Administrator
    primary key (tenant_id, object_id, assignment_id)
) without rowid;
