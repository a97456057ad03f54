-- Issue 14: the durable outbox of notifications. A row is written in the same transaction as the lifecycle
-- transition it reports (a json sink: one row per event; a slack or teams sink: one digest row per scan),
-- then delivered by a worker: pending -> delivered, or dead after the configured number of attempts.
-- event_id is stable (derived from tenant, object, episode and event type), so a receiver that dedupes
-- on it sees each event once even when a crash between sending and recording repeats a delivery.
create table outbox (
    sink            text not null,            -- the sink's configured name
    event_id        text not null,
    type            text not null,            -- orphan.confirmed | orphan.resolved | digest
    tenant_id       text,                     -- null for a digest
    scan_id         text not null,
    occurred_at     text not null,            -- RFC 3339
    body            text not null,            -- JSON: the event document, or the digest's summary
    state           text not null default 'pending',   -- pending | delivered | dead
    attempts        integer not null default 0,
    next_attempt_ms integer not null,         -- Unix milliseconds: due at
    claimed_until   integer,                  -- Unix milliseconds: a worker is attempting it until then
    last_error      text,                     -- never holds the sink's URL or secret
    delivered_at    text,
    primary key (sink, event_id)
) without rowid;

create index outbox_due on outbox (state, next_attempt_ms);
create index finding_history_by_scan on finding_history (scan_id) where scan_id is not null;
