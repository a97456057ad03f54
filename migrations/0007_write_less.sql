-- Write less per scan (issue 12): a scan no longer copies every identity's verdict into its own rows.
-- An identity's verdicts are kept as *runs*: the scans of its tenant, one after another, that listed it
-- with the same verdict (identity columns, verdict, reason, detail, and evidence but for the request ids
-- and check time that every scan renews). An unchanged identity costs nothing per scan; a change costs
-- one row.
--
-- * scans.seq numbers the recorded scans in the order they were recorded; it is null for a scan that is
--   running, was abandoned, or whose verdicts have expired ([database] retain_scans).
-- * findings.run_since: while the identity's current run has exactly its findings row's columns (the
--   usual case: the row holds the scan's verdict), the seq of the run's first scan; null otherwise.
-- * verdict_runs: every other run: finished ones (until = the seq of their last scan) and current ones
--   whose verdict differs from the findings row (until null; e.g. a failed check, which leaves the
--   finding's last authoritative verdict in place).
--
-- "The verdicts of scan X" (the view scan_verdicts, as the table of that name had them) are, for each
-- tenant X covered, the runs of that tenant that include X. Those of an unchanged identity carry the
-- request ids and check time of the answer its row holds, not necessarily X's own.

alter table scans add column seq integer;
create unique index scans_by_seq on scans (seq);

alter table findings add column run_since integer;

create table verdict_runs (
    tenant_id       text not null,
    object_key      text not null,       -- lower-case object id
    since           integer not null,    -- scans.seq of the run's first scan
    until           integer,             -- scans.seq of its last; null while it runs
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
    primary key (tenant_id, object_key, since)
) without rowid;

-- The scans whose verdicts are kept, numbered oldest first (in started_at order: scans recorded before
-- this version have no other).
create temp table kept_scans as
select scan_id, row_number() over (order by started_at, scan_id) as n
from scans s where exists (select 1 from scan_verdicts v where v.scan_id = s.scan_id);
update scans set seq = k.n from temp.kept_scans k where k.scan_id = scans.scan_id;

-- Their verdicts as runs. A verdict starts a run unless the tenant's previous numbered scan listed the
-- identity with the same verdict. A run's columns are those of its last scan.
create temp table migrated_runs (
    tenant_id  text not null,
    object_key text not null,
    object_id  text not null,
    since      integer not null,
    last       integer not null,
    current    integer not null,         -- the run reaches the tenant's latest numbered scan
    primary key (tenant_id, object_key, since)
) without rowid;
insert into temp.migrated_runs
with tenant_scans as (
    select t.tenant_id, s.scan_id, s.seq,
           row_number() over (partition by t.tenant_id order by s.seq) as pos,
           max(s.seq) over (partition by t.tenant_id) as latest
    from scan_tenants t join scans s on s.scan_id = t.scan_id
    where s.seq is not null),
listed as (
    select v.*, lower(v.object_id) as object_key, ts.seq, ts.pos, ts.latest,
           json_remove(v.evidence, '$.request_id', '$.correlation_request_id', '$.checked_at') as substance
    from scan_verdicts v join tenant_scans ts on ts.scan_id = v.scan_id and ts.tenant_id = v.tenant_id),
marked as (
    select *,
           case when lag(pos) over w = pos - 1
                 and lag(object_id) over w is object_id and lag(app_id) over w is app_id
                 and lag(display_name) over w is display_name and lag(identity_type) over w is identity_type
                 and lag(resource_id) over w is resource_id and lag(subscription_id) over w is subscription_id
                 and lag(resource_type) over w is resource_type and lag(verdict) over w is verdict
                 and lag(reason) over w is reason and lag(detail) over w is detail
                 and lag(substance) over w is substance
                then 0 else 1 end as starts
    from listed
    window w as (partition by tenant_id, object_key order by seq)),
numbered as (
    select *, sum(starts) over (partition by tenant_id, object_key order by seq) as run from marked)
select tenant_id, object_key, max(object_id), min(seq), max(seq), max(seq) = max(latest)
from numbered group by tenant_id, object_key, run;

-- A current run that has exactly its findings row's columns is held by the row.
update findings set run_since = m.since
from temp.migrated_runs m
join scans s on s.seq = m.last
join scan_verdicts v on v.scan_id = s.scan_id and v.tenant_id = m.tenant_id and v.object_id = m.object_id
where m.tenant_id = findings.tenant_id and m.object_key = findings.object_id and m.current
  and v.object_id is findings.object_id and v.app_id is findings.app_id
  and v.display_name is findings.display_name and v.identity_type is findings.identity_type
  and v.resource_id is findings.resource_id and v.subscription_id is findings.subscription_id
  and v.resource_type is findings.resource_type and v.verdict is findings.verdict
  and v.reason is findings.reason and v.detail is findings.detail
  and json_remove(v.evidence, '$.request_id', '$.correlation_request_id', '$.checked_at')
      is json_remove(findings.evidence, '$.request_id', '$.correlation_request_id', '$.checked_at');

-- Every other run gets a row of its own.
insert into verdict_runs (tenant_id, object_key, since, until, object_id, app_id, display_name, identity_type,
    resource_id, subscription_id, resource_type, verdict, reason, detail, evidence)
select m.tenant_id, m.object_key, m.since, case when m.current then null else m.last end,
       v.object_id, v.app_id, v.display_name, v.identity_type, v.resource_id, v.subscription_id,
       v.resource_type, v.verdict, v.reason, v.detail, v.evidence
from temp.migrated_runs m
join scans s on s.seq = m.last
join scan_verdicts v on v.scan_id = s.scan_id and v.tenant_id = m.tenant_id and v.object_id = m.object_id
where not exists (select 1 from findings f where f.tenant_id = m.tenant_id and f.object_id = m.object_key
                  and f.run_since = m.since);

drop table temp.migrated_runs;
drop table temp.kept_scans;
drop index scan_verdicts_by_verdict;
drop table scan_verdicts;

-- What the table held: the verdicts of each scan whose verdicts are kept.
create view scan_verdicts as
select s.scan_id, f.tenant_id, f.object_id, f.app_id, f.display_name, f.identity_type, f.resource_id,
       f.subscription_id, f.resource_type, f.verdict, f.reason, f.detail, f.evidence
from scans s
join scan_tenants t on t.scan_id = s.scan_id
join findings f on f.tenant_id = t.tenant_id and f.run_since <= s.seq
union all
select s.scan_id, r.tenant_id, r.object_id, r.app_id, r.display_name, r.identity_type, r.resource_id,
       r.subscription_id, r.resource_type, r.verdict, r.reason, r.detail, r.evidence
from scans s
join scan_tenants t on t.scan_id = s.scan_id
join verdict_runs r on r.tenant_id = t.tenant_id and r.since <= s.seq and (r.until is null or r.until >= s.seq);

-- Indices that earn their place (every query checked with EXPLAIN QUERY PLAN; ~190 of ~910 bytes per
-- identity went to these two). Lists filtered by a verdict other than healthy read the partial index
-- findings_not_healthy; by healthy, nearly every row, in primary-key order. Findings per state (the
-- metrics, lists and exports by state, a tenant's open findings) are among the rows with a state,
-- which are few: a partial index of those, in key order, serves each page of a list or an export
-- without sorting every finding again (by state first, a 100,000-finding export took 11 s, now 2 s).
drop index findings_by_verdict;
drop index findings_by_state;
create index findings_by_state on findings (tenant_id, object_id, state) where state is not null;
