-- The schema of a scan's working database (src/store/work/), not of the store: a file of its own
-- per scan, beside the store's database, created empty for each scan and deleted when the scan has been
-- recorded. Graph pages are staged here as they arrive (scan_items), Resource Graph rows likewise
-- (scan_arg_rows, joined to the identities by resource id and principal), the evidence of ARM checks is
-- written back to scan_items, and the judge writes each verdict to scan_results, which recording reads
-- (attached) into the store's scan_verdicts and findings. `object_key` and `resource_key` are lower-case.

create table scan_items (
    scan_id                text not null,
    tenant_id              text not null,
    object_key             text not null,
    object_id              text not null,
    app_id                 text not null,
    display_name           text not null,
    identity_type          text not null,
    resource_id            text,             -- null when alternativeNames named no resource we could read
    subscription_key       text,
    resource_type          text,
    alternative_names      text,             -- JSON array, kept only when no resource id was recognised
    source                 text,             -- arm once checked by ARM (Resource Graph's rows are joined)
    answer                 text,             -- JSON of the ARM answer (source arm)
    request_id             text,
    correlation_request_id text,
    checked_at             text,
    primary key (scan_id, tenant_id, object_key)
) without rowid;

create table scan_arg_rows (
    scan_id       text not null,
    tenant_id     text not null,
    resource_key  text not null,
    principal_key text,
    request_id    text,
    checked_at    text not null,
    primary key (scan_id, tenant_id, resource_key)
) without rowid;

create table scan_results (
    scan_id         text not null,
    tenant_id       text not null,
    object_key      text not null,
    object_id       text not null,
    app_id          text not null,
    display_name    text not null,
    identity_type   text not null,
    resource_id     text,
    subscription_id text,
    resource_type   text,
    verdict         text not null,
    reason          text not null,
    detail          text not null,
    evidence        text not null,
    primary key (scan_id, tenant_id, object_key)
) without rowid;
