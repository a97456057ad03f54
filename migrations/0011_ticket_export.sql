-- Issue 14: the support-ticket ledger. A finding is exported when `miaudit export --format ticket` put it
-- into a ticket text: in which episode (a new episode is a new orphan, to be filed again) and when.
alter table findings add column exported_episode integer;
alter table findings add column exported_at text;
