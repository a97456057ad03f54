-- One case rule for every table: tenant, object and subscription ids lower-case (ASCII), as the code has
-- written them since TenantId, ObjectId and SubscriptionId (src/domain/ids.rs). Before, findings.object_id
-- was lower-case but scan_verdicts.object_id kept Graph's case, and subscription_id kept the case of the
-- resource id it came from. The ids were already trimmed when written; only their case changes here.
--
-- Rows that differ only by the case of their ids would collide on their primary key once lower-cased. One
-- of them is kept, chosen the same way in every table:
--   1. the most recent: findings by last_seen_at, tenant_inventory by last_inventory_at, graph_delta by
--      full_sync_at (scan_tenants and scan_verdicts rows of one scan have no time of their own);
--   2. then the row whose ids are already lower-case (what the code writes now);
--   3. then the first by its ids in binary order.
-- The others are deleted. finding_history has no key on the ids: every entry is kept and lower-cased, so
-- the history of a deleted findings row stays with the finding that was kept.
--
-- Rows that need no change are only read: `x != lower(x)` finds the mixed-case ones, and only their
-- groups are ranked.

-- findings: key (tenant_id, object_id).
delete from findings where (tenant_id, object_id) in (
    select tenant_id, object_id from (
        select tenant_id, object_id, row_number() over (
            partition by lower(tenant_id), lower(object_id)
            order by last_seen_at desc,
                     (tenant_id = lower(tenant_id) and object_id = lower(object_id)) desc,
                     tenant_id, object_id
        ) as rank
        from findings
        where (lower(tenant_id), lower(object_id)) in (
            select lower(tenant_id), lower(object_id) from findings
            where tenant_id != lower(tenant_id) or object_id != lower(object_id))
    ) where rank > 1);
update findings
set tenant_id = lower(tenant_id), object_id = lower(object_id), subscription_id = lower(subscription_id)
where tenant_id != lower(tenant_id) or object_id != lower(object_id)
   or subscription_id != lower(subscription_id);

-- scan_verdicts: key (scan_id, tenant_id, object_id).
delete from scan_verdicts where (scan_id, tenant_id, object_id) in (
    select scan_id, tenant_id, object_id from (
        select scan_id, tenant_id, object_id, row_number() over (
            partition by scan_id, lower(tenant_id), lower(object_id)
            order by (tenant_id = lower(tenant_id) and object_id = lower(object_id)) desc,
                     tenant_id, object_id
        ) as rank
        from scan_verdicts
        where (scan_id, lower(tenant_id), lower(object_id)) in (
            select scan_id, lower(tenant_id), lower(object_id) from scan_verdicts
            where tenant_id != lower(tenant_id) or object_id != lower(object_id))
    ) where rank > 1);
update scan_verdicts
set tenant_id = lower(tenant_id), object_id = lower(object_id), subscription_id = lower(subscription_id)
where tenant_id != lower(tenant_id) or object_id != lower(object_id)
   or subscription_id != lower(subscription_id);

-- scan_tenants: key (scan_id, tenant_id).
delete from scan_tenants where (scan_id, tenant_id) in (
    select scan_id, tenant_id from (
        select scan_id, tenant_id, row_number() over (
            partition by scan_id, lower(tenant_id)
            order by (tenant_id = lower(tenant_id)) desc, tenant_id
        ) as rank
        from scan_tenants
        where (scan_id, lower(tenant_id)) in (
            select scan_id, lower(tenant_id) from scan_tenants where tenant_id != lower(tenant_id))
    ) where rank > 1);
update scan_tenants set tenant_id = lower(tenant_id) where tenant_id != lower(tenant_id);

-- tenant_inventory: key tenant_id.
delete from tenant_inventory where tenant_id in (
    select tenant_id from (
        select tenant_id, row_number() over (
            partition by lower(tenant_id)
            order by last_inventory_at desc, (tenant_id = lower(tenant_id)) desc, tenant_id
        ) as rank
        from tenant_inventory
        where lower(tenant_id) in (
            select lower(tenant_id) from tenant_inventory where tenant_id != lower(tenant_id))
    ) where rank > 1);
update tenant_inventory set tenant_id = lower(tenant_id) where tenant_id != lower(tenant_id);

-- graph_delta: key tenant_id.
delete from graph_delta where tenant_id in (
    select tenant_id from (
        select tenant_id, row_number() over (
            partition by lower(tenant_id)
            order by full_sync_at desc, (tenant_id = lower(tenant_id)) desc, tenant_id
        ) as rank
        from graph_delta
        where lower(tenant_id) in (
            select lower(tenant_id) from graph_delta where tenant_id != lower(tenant_id))
    ) where rank > 1);
update graph_delta set tenant_id = lower(tenant_id) where tenant_id != lower(tenant_id);

-- finding_history: no key on the ids.
update finding_history set tenant_id = lower(tenant_id), object_id = lower(object_id)
where tenant_id != lower(tenant_id) or object_id != lower(object_id);
