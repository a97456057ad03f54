-- Graph delta per tenant (opt-in, [scan] graph_delta): the delta link of the last recorded complete
-- inventory, and when the last full listing was made (a full listing is repeated at least every 6 days,
-- delta tokens of directory objects live 7).
create table graph_delta (
    tenant_id    text primary key,
    delta_link   text not null,
    full_sync_at text not null
);
