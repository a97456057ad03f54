//! Publish (notifications): delivers what the outbox holds to the configured webhooks.
//!
//! A recorded scan enqueues its events in its own transaction (`store::outbox`); the [`Notifier`] takes
//! due rows one at a time, claims each (so two processes on one database do not both send it), POSTs
//! it, and records the outcome at once: delivered; failed and due again after an exponential back-off
//! with jitter (or the receiver's `Retry-After`); dead after `[notify] max_attempts`. Delivery is
//! at-least-once: a crash between a receiver's 2xx and the record of it repeats that one delivery, with
//! the same `X-Miaudit-Event-Id`. Redirects are not followed, and neither a webhook's URL nor its secret
//! is ever logged, stored with an error, or counted in a label.

pub mod render;
pub mod sign;

use crate::config::{NotifySettings, WebhookSettings};
use crate::domain::SinkKind;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::outbox::OutboxRow;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long one attempt may take before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// A claimed row is due again after this if its attempt never records an outcome (a crash).
const CLAIM: Duration = Duration::from_secs(60);
/// Rows read per pass.
const BATCH: u32 = 32;
/// The longest the worker sleeps without looking at the outbox.
const IDLE: Duration = Duration::from_secs(30);
/// Delivered and dead rows are forgotten after this.
const KEEP: chrono::Duration = chrono::Duration::days(30);
/// The longest `Retry-After` honoured; a longer one is capped (the delivery is not abandoned for it).
const MAX_SERVER_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Whether a pass can go on after one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// The outbox could not be written (claimed, recorded): the pass ends.
    StoreFailed,
}

/// How often delivered and dead rows past [`KEEP`] are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq)]
enum Attempt {
    Delivered,
    /// Failed; the server's requested wait, if it sent one.
    Failed {
        error: String,
        retry_after: Option<Duration>,
        /// No answer, 429 or 5xx: the receiver is down or busy (not a refusal of this one event).
        receiver_down: bool,
    },
}

/// The delivery worker of one process.
#[derive(Clone)]
pub struct Notifier {
    store: Store,
    settings: Arc<NotifySettings>,
    /// Base of the links in digests.
    base: String,
    client: reqwest::Client,
    metrics: Metrics,
    wake: Arc<Notify>,
}

impl Notifier {
    pub fn new(
        store: Store,
        settings: &NotifySettings,
        listen: std::net::SocketAddr,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("miaudit/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        for w in &settings.webhooks {
            for outcome in ["delivered", "failed", "dead"] {
                metrics.notifications.with_label_values(&[&w.name, outcome]);
            }
            metrics.outbox_pending.with_label_values(&[&w.name]).set(0);
        }
        Ok(Self {
            store,
            settings: Arc::new(settings.clone()),
            base: base.trim_end_matches('/').to_owned(),
            client,
            metrics,
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn is_configured(&self) -> bool {
        !self.settings.webhooks.is_empty()
    }

    /// Wakes the worker (a scan was just recorded).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers until `cancel`: a pass over what is due, then sleep until the next row is due, a scan
    /// is recorded, or [`IDLE`] passes. Delivered and dead rows older than [`KEEP`] are pruned daily.
    pub async fn run(self, cancel: CancellationToken) {
        // This daemon is the one delivering now: what a killed process was attempting is due again.
        match self.store.outbox_release_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                released = n,
                "notifications a previous process was delivering are due again"
            ),
            Err(e) => tracing::warn!(error = %e, "could not release the outbox's claims"),
        }
        let mut pruned: Option<std::time::Instant> = None;
        loop {
            if pruned.is_none_or(|p| p.elapsed() >= PRUNE_EVERY) {
                if let Err(e) = self.store.outbox_prune(Utc::now() - KEEP).await {
                    tracing::warn!(error = %e, "could not prune the notification outbox");
                }
                pruned = Some(std::time::Instant::now());
            }
            let next = self.deliver_due(&cancel).await;
            let sleep = next.unwrap_or(IDLE).min(IDLE);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One pass: attempts once every row due when the pass starts (a row that fails is due again only
    /// in a later pass, however short its back-off). Returns how long until the next pending row is due.
    pub async fn deliver_due(&self, cancel: &CancellationToken) -> Option<Duration> {
        let sinks: Vec<String> = self
            .settings
            .webhooks
            .iter()
            .map(|w| w.name.clone())
            .collect();
        let start = Utc::now().timestamp_millis();
        let mut seen = std::collections::HashSet::new();
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            let due = match self.store.outbox_due(start, &sinks, BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    self.metrics.store_errors.inc();
                    tracing::error!(error = %e, "could not read the notification outbox");
                    return Some(IDLE);
                }
            };
            // A row seen again in this pass was held by another worker: left for the next pass.
            let fresh: Vec<OutboxRow> = due
                .into_iter()
                .filter(|r| seen.insert((r.sink.clone(), r.event_id.clone())))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for row in fresh {
                if cancel.is_cancelled() {
                    return None;
                }
                match self.deliver(&row).await {
                    Outcome::Done => {}
                    // The database cannot be written: the pass ends instead of re-reading the same rows.
                    Outcome::StoreFailed => return Some(IDLE),
                }
            }
        }
        self.update_pending().await;
        let next = self.store.outbox_next_due(&sinks).await.ok().flatten()?;
        let wait = next.saturating_sub(Utc::now().timestamp_millis()).max(0);
        Some(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
    }

    async fn update_pending(&self) {
        match self.store.outbox_pending().await {
            Ok(counts) => {
                for w in &self.settings.webhooks {
                    let n = counts.iter().find(|(s, _)| *s == w.name).map_or(0, |c| c.1);
                    self.metrics
                        .outbox_pending
                        .with_label_values(&[&w.name])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::error!(error = %e, "could not count the notification outbox");
            }
        }
    }

    /// Claims, attempts and records one delivery.
    async fn deliver(&self, row: &OutboxRow) -> Outcome {
        let Some(sink) = self.settings.webhooks.iter().find(|w| w.name == row.sink) else {
            // Not asked for (rows are read for configured sinks only); left as it is.
            return Outcome::Done;
        };
        let now = Utc::now().timestamp_millis();
        let claim_until = now.saturating_add(CLAIM.as_millis() as i64);
        match self.store.outbox_claim(row, now, claim_until).await {
            Ok(true) => {}
            Ok(false) => return Outcome::Done, // another worker has it, or its back-off moved
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::error!(error = %e, "could not claim a notification");
                return Outcome::StoreFailed;
            }
        }
        let attempt = self.attempt(sink, row).await;
        let attempts = row.attempts.saturating_add(1);
        match attempt {
            Attempt::Delivered => {
                if let Err(e) = self.store.outbox_delivered(row, Utc::now()).await {
                    self.metrics.store_errors.inc();
                    tracing::error!(error = %e, "could not record a delivered notification; it may be sent again");
                    return Outcome::StoreFailed;
                }
                self.metrics
                    .notifications
                    .with_label_values(&[&sink.name, "delivered"])
                    .inc();
                tracing::info!(sink = %sink.name, event_id = %row.event_id, r#type = %row.kind, attempts, "notification delivered");
                Outcome::Done
            }
            Attempt::Failed {
                error,
                retry_after,
                receiver_down,
            } => {
                if attempts >= self.settings.max_attempts {
                    tracing::error!(sink = %sink.name, event_id = %row.event_id, attempts, error = %error,
                        "notification dead-lettered after its last attempt");
                    self.record(row, None, &error, "dead").await
                } else {
                    // The receiver's Retry-After is a floor: never sooner than it asks, nor sooner than
                    // the back-off (a "Retry-After: 0" does not turn into a busy loop).
                    let wait = retry_after
                        .map_or(Duration::ZERO, |w| w.min(MAX_SERVER_WAIT))
                        .max(self.backoff(attempts));
                    tracing::warn!(sink = %sink.name, event_id = %row.event_id, attempts, error = %error,
                        retry_in_seconds = wait.as_secs_f64(), "notification not delivered; will retry");
                    let at = Utc::now()
                        .timestamp_millis()
                        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2));
                    let outcome = self.record(row, Some(at), &error, "failed").await;
                    // The receiver is down: its other deliveries wait with this one, rather than each
                    // costing an attempt (and a timeout) in this pass. A refusal of this one event
                    // (another 4xx) holds nothing else back.
                    if receiver_down
                        && let Err(e) = self.store.outbox_postpone_sink(&sink.name, at).await
                    {
                        self.metrics.store_errors.inc();
                        tracing::error!(error = %e, "could not hold back a failing webhook's deliveries");
                        return Outcome::StoreFailed;
                    }
                    outcome
                }
            }
        }
    }

    async fn record(
        &self,
        row: &OutboxRow,
        retry_at: Option<i64>,
        error: &str,
        outcome: &str,
    ) -> Outcome {
        self.metrics
            .notifications
            .with_label_values(&[&row.sink, outcome])
            .inc();
        if let Err(e) = self.store.outbox_failed(row, retry_at, error).await {
            self.metrics.store_errors.inc();
            tracing::error!(error = %e, "could not record a failed notification");
            return Outcome::StoreFailed;
        }
        Outcome::Done
    }

    /// The wait after the `attempts`-th failure: the base delay doubled per attempt, capped, with
    /// "equal jitter" (half fixed, half random) so that many failed deliveries do not retry in step.
    fn backoff(&self, attempts: u32) -> Duration {
        backoff(
            self.settings.retry_base_delay,
            self.settings.retry_max_delay,
            attempts,
        )
    }

    /// One POST of the row to the sink.
    async fn attempt(&self, sink: &WebhookSettings, row: &OutboxRow) -> Attempt {
        let body = match self.body(sink, row) {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Failed {
                    error: e,
                    retry_after: None,
                    receiver_down: false,
                };
            }
        };
        let mut req = self
            .client
            .post(sink.url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if sink.kind == SinkKind::Json {
            let ts = Utc::now().timestamp();
            req = req
                .header("X-Miaudit-Event-Id", &row.event_id)
                .header("X-Miaudit-Timestamp", ts.to_string());
            if let Some(secret) = &sink.secret {
                req = req.header(
                    "X-Miaudit-Signature",
                    sign::signature(secret.expose(), ts, body.as_bytes()),
                );
            }
        }
        match req.body(body).send().await {
            Ok(resp) if resp.status().is_success() => Attempt::Delivered,
            Ok(resp) => {
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                let error = if status.is_redirection() {
                    format!("HTTP {}: a redirect, not followed", status.as_u16())
                } else {
                    format!("HTTP {}", status.as_u16())
                };
                Attempt::Failed {
                    error,
                    retry_after,
                    receiver_down: status.as_u16() == 429 || status.is_server_error(),
                }
            }
            // Without the URL: it is the sink's credential.
            Err(e) => Attempt::Failed {
                error: describe(&e.without_url()),
                retry_after: None,
                receiver_down: true,
            },
        }
    }

    fn body(&self, sink: &WebhookSettings, row: &OutboxRow) -> Result<String, String> {
        if sink.kind == SinkKind::Json {
            return Ok(row.body.clone());
        }
        let digest: serde_json::Value = serde_json::from_str(&row.body)
            .map_err(|e| format!("the stored digest does not parse: {e}"))?;
        let message = match sink.kind {
            SinkKind::Slack => render::slack(&digest, &self.base),
            _ => render::teams(&digest, &self.base),
        };
        Ok(message.to_string())
    }
}

/// The wait after the `attempts`-th failure (see [`Notifier::backoff`]).
fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let exp = base
        .checked_mul(1u32 << attempts.saturating_sub(1).min(20))
        .unwrap_or(max)
        .min(max);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

/// A transport error in a few words, with its cause chain.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut s = what.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// `Retry-After` as seconds or an HTTP date; nonsense is ignored.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0)
            .then(|| Duration::try_from_secs_f64(s).unwrap_or(MAX_SERVER_WAIT));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (at.with_timezone(&Utc) - Utc::now())
        .num_milliseconds()
        .max(0);
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(60));
        for _ in 0..100 {
            let first = backoff(base, max, 1);
            assert!(
                (Duration::from_secs(5)..=base).contains(&first),
                "{first:?}"
            );
            let third = backoff(base, max, 3);
            assert!((Duration::from_secs(20)..=Duration::from_secs(40)).contains(&third));
            let late = backoff(base, max, 40);
            assert!((Duration::from_secs(30)..=max).contains(&late), "{late:?}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("1e400"));
        assert_eq!(retry_after(&h), None);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
