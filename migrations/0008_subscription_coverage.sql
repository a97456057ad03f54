-- Issue 13: how much of the estate each tenant's credential sees, per recorded scan: the subscriptions its
-- managed identities name, and how many of those the credential's subscription listing shows. Null when the
-- inventory or the listing failed (and for scans recorded before this migration). The daemon's
-- miaudit_subscription_coverage_ratio starts from the newest scan that has them.
alter table scan_tenants add column subscriptions_referenced integer;
alter table scan_tenants add column subscriptions_listed integer;
