-- Issue 14, after review: a dangling role assignment is confirmed only when it has been found in scans
-- spanning [lifecycle] confirm_after (as orphans are), and a scan replaces only the rows of the
-- subscriptions it asked about.
alter table dangling_role_assignments add column subscription_id text;
alter table dangling_role_assignments add column confirmed_at text;
