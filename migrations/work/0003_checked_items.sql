-- The identities ARM has checked (a few among many): the candidates the judge takes once ARM has answered
-- are read through it rather than by walking every staged identity. Partial, so staging a Graph page
-- adds nothing to it.
create index scan_items_checked on scan_items (scan_id, tenant_id, object_key) where source is not null;
