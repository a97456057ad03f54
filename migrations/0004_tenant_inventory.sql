-- When each tenant's Graph inventory was last read to the end. An identity in `findings` was seen in
-- that inventory (anything missing from a complete inventory is resolved or dropped), so unchanged
-- healthy rows need no write per scan: their last_seen_at is at least this time.
create table tenant_inventory (
    tenant_id         text primary key,
    last_inventory_at text not null,
    last_scan_id      text not null
);
