//! The transport every Azure call goes through — token requests, Graph, Resource Graph and ARM: one
//! retry loop with a per-request timeout and body cap, bounded retries with exponential backoff and
//! jitter on 429/500/502/503/504 and failed attempts, the server's requested wait (`Retry-After` in
//! seconds, possibly fractional, or an HTTP date; `retry-after-ms`; Resource Graph's
//! `x-ms-user-quota-resets-after`) up to a maximum, and request counters. Redirects are never followed
//! (the client is built with `redirect::Policy::none()`). Tokens are not its business: `auth` uses it,
//! and `http` adds bearer tokens on top.
//!
//! Sources: Graph throttling guidance (G-THR: honour `Retry-After`, may be fractional; exponential
//! backoff without it), Graph best practices (G-BP: 503 like 429, fresh `client-request-id`), ARM
//! throttling (ARM-THR: 429 + `Retry-After` seconds), Resource Graph throttling (ARG-THR: quota headers).

use super::{Api, AzureError, Counters, ErrorKind, Reply};
use std::sync::Arc;
use std::time::Duration;

/// Retry and timeout settings.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Timeout of one attempt, from sending to the last byte of the body.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff step without a server hint; doubles each retry.
    pub base_delay: Duration,
    /// Cap of one backoff step.
    pub max_delay: Duration,
    /// The longest server-requested wait (`Retry-After`, `retry-after-ms`, a quota reset) that is
    /// honoured; a server asking for more fails the call instead of stalling the scan for days.
    pub max_server_wait: Duration,
    /// The largest response body read; a larger one fails the call (never truncated silently).
    pub max_response_bytes: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_server_wait: Duration::from_secs(300),
            max_response_bytes: 32 * 1024 * 1024,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half fixed, half random.
    fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Statuses that mean "try again later" (G-THR, G-ERR, ARM-THR).
pub fn is_transient(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The server's requested wait, from `retry-after-ms` / `x-ms-retry-after-ms`, `Retry-After`
/// (delta-seconds, fractional as Graph sends it, or an HTTP date), or Resource Graph's
/// `x-ms-user-quota-resets-after` (`hh:mm:ss`). Values that do not parse, are negative or not finite
/// are ignored; huge ones saturate (at [`FOREVER`]) instead of overflowing, and the caller compares them
/// with its maximum wait.
pub fn server_delay(reply: &Reply) -> Option<Duration> {
    if let Some(ms) = reply
        .header("retry-after-ms")
        .or_else(|| reply.header("x-ms-retry-after-ms"))
        .and_then(|v| seconds(v.trim()).map(|ms| ms / 1000.0))
    {
        return Some(saturating_secs(ms));
    }
    if let Some(v) = reply.header("retry-after") {
        let v = v.trim();
        if let Some(s) = seconds(v) {
            return Some(saturating_secs(s));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            let ms = at
                .with_timezone(&chrono::Utc)
                .signed_duration_since(chrono::Utc::now())
                .num_milliseconds();
            return Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        }
    }
    reply
        .header("x-ms-user-quota-resets-after")
        .and_then(parse_hms)
}

/// A wait no server means: what absurd values saturate at (about 31 years, far beyond any maximum wait,
/// and small enough to add to an `Instant` without overflow).
pub const FOREVER: Duration = Duration::from_secs(1 << 30);

/// A non-negative, finite number of seconds, or `None`.
fn seconds(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)
}

fn saturating_secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).map_or(FOREVER, |d| d.min(FOREVER))
}

/// The remaining request budget a reply announces: Resource Graph's `x-ms-user-quota-remaining`
/// (ARG-THR) or ARM's `x-ms-ratelimit-remaining-subscription-reads` / `-tenant-reads` (ARM-THR).
/// A negative figure reads as 0; one that does not fit an `i64` is ignored.
pub fn quota_remaining(reply: &Reply) -> Option<i64> {
    [
        "x-ms-user-quota-remaining",
        "x-ms-ratelimit-remaining-subscription-reads",
        "x-ms-ratelimit-remaining-tenant-reads",
    ]
    .iter()
    .find_map(|h| reply.header(h).and_then(parse_count))
}

/// A count from a header: an integer, negative read as 0.
pub fn parse_count(v: &str) -> Option<i64> {
    v.trim().parse::<i64>().ok().map(|n| n.max(0))
}

/// Parses `hh:mm:ss` (optionally with fractional seconds), the format of `x-ms-user-quota-resets-after`.
/// Saturates at [`FOREVER`] instead of overflowing.
pub fn parse_hms(v: &str) -> Option<Duration> {
    let mut parts = v.trim().split(':');
    let h: u64 = parts.next()?.trim().parse().ok()?;
    let m: u64 = parts.next()?.trim().parse().ok()?;
    let s = seconds(parts.next()?.trim())?;
    if parts.next().is_some() || m >= 60 {
        return None;
    }
    let whole = h.saturating_mul(3600).saturating_add(m * 60);
    Some(
        Duration::from_secs(whole)
            .saturating_add(saturating_secs(s))
            .min(FOREVER),
    )
}

/// The URL to request for a paging link (`@odata.nextLink`, `nextLink`, `@odata.deltaLink`): the link
/// resolved against `listing` (the URL of the listing's first request, on the configured endpoint), only
/// if it stays on the same scheme, host and port and on the same path (compared case-insensitively).
/// Anything else (a gateway that rewrote the link, a link to another listing) is refused, so a bearer
/// token never leaves the endpoint and a page of something else is never read as this listing's next.
pub fn follow_link(listing: &str, link: &str) -> Option<String> {
    let base = url::Url::parse(listing).ok()?;
    let target = base.join(link.trim()).ok()?;
    let same_origin = target.scheme() == base.scheme()
        && target.host_str().map(str::to_ascii_lowercase)
            == base.host_str().map(str::to_ascii_lowercase)
        && target.port_or_known_default() == base.port_or_known_default()
        && target.username().is_empty()
        && target.password().is_none()
        && target.fragment().is_none();
    let same_path = target
        .path()
        .trim_end_matches('/')
        .eq_ignore_ascii_case(base.path().trim_end_matches('/'));
    (same_origin && same_path).then(|| target.into())
}

/// What a caller makes of a final reply.
pub enum Handled<T> {
    Done(T),
    /// The reply was unusable (e.g. a truncated body); counts as a failed attempt.
    Retry(String),
    /// Send again at once, not counted as an attempt (the token was refreshed after a 401 that blamed
    /// it). The caller makes sure this happens a bounded number of times.
    Again,
}

/// One retry loop for every Azure call: tokens, Graph, Resource Graph and ARM. Sends what `request`
/// builds, under the policy (timeout, body cap, retries with backoff and jitter on transient statuses
/// and failed attempts, the server's requested wait up to `max_server_wait`), counts every request and
/// answer, and hands each final reply to `handle`.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    policy: RetryPolicy,
    counters: Arc<Counters>,
}

impl Transport {
    pub fn new(client: reqwest::Client, policy: RetryPolicy, counters: Arc<Counters>) -> Self {
        Self {
            client,
            policy,
            counters,
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Sends what `request` builds (a fresh request each attempt) until `handle` takes a reply or the
    /// policy gives up. `request` may fail (no token): that error ends the call.
    pub async fn run<T, Fut>(
        &self,
        api: Api,
        mut request: impl FnMut() -> Fut,
        mut handle: impl FnMut(Reply) -> Handled<T>,
    ) -> Result<T, AzureError>
    where
        Fut: std::future::Future<Output = Result<reqwest::RequestBuilder, AzureError>>,
    {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let req = request().await?;
            let outcome = send_once(req, &self.policy).await;
            self.counters.request(api);
            self.counters
                .answered(api, outcome.as_ref().ok().map(|r| r.status));
            let (failure, last_kind) = match outcome {
                Err(SendError::TooLarge(limit)) => {
                    self.counters.failure(api, ErrorKind::Malformed);
                    return Err(AzureError::TooLarge { api, limit });
                }
                // What the failed attempt met: the kind of the error if retries run out.
                Err(SendError::Failed(e)) => (e, ErrorKind::Transient),
                Ok(reply) => {
                    self.note_reply(api, &reply);
                    if is_transient(reply.status) {
                        let delay = self.transient_wait(api, attempts, &reply)?;
                        tracing::debug!(api = %api, status = reply.status, ?delay, "transient answer, retrying");
                        self.counters.retry(api);
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    match handle(reply) {
                        Handled::Done(v) => return Ok(v),
                        Handled::Again => {
                            attempts -= 1;
                            continue;
                        }
                        Handled::Retry(why) => (why, ErrorKind::Malformed),
                    }
                }
            };
            if attempts > self.policy.max_retries {
                return Err(self.exhausted(api, attempts, failure, last_kind));
            }
            tracing::debug!(api = %api, error = %failure, "attempt failed, retrying");
            self.counters.retry(api);
            tokio::time::sleep(self.policy.backoff(attempts - 1)).await;
        }
    }

    /// Counts what a reply announces: the request quota left, a 429.
    fn note_reply(&self, api: Api, reply: &Reply) {
        if let Some(q) = quota_remaining(reply) {
            self.counters.quota_remaining(api, q);
        }
        if reply.status == 429 {
            self.counters.throttled(api);
        }
    }

    /// How long to wait before sending again after a transient answer: the server's requested wait,
    /// else the backoff. An error, counted, when the retries are used up or the server asks for longer
    /// than `max_server_wait`.
    fn transient_wait(
        &self,
        api: Api,
        attempts: u32,
        reply: &Reply,
    ) -> Result<Duration, AzureError> {
        if attempts > self.policy.max_retries {
            let why = format!("HTTP {}", reply.status);
            return Err(self.exhausted(api, attempts, why, ErrorKind::of_status(reply.status)));
        }
        match server_delay(reply) {
            Some(d) if d > self.policy.max_server_wait => {
                self.counters.failure(api, ErrorKind::Throttled);
                Err(AzureError::WaitTooLong {
                    api,
                    asked: d,
                    max: self.policy.max_server_wait,
                })
            }
            Some(d) => Ok(d),
            None => Ok(self.policy.backoff(attempts - 1)),
        }
    }

    /// The error that ends a call after `attempts`, its last failure being `last` of `kind` (counted).
    fn exhausted(&self, api: Api, attempts: u32, last: String, kind: ErrorKind) -> AzureError {
        self.counters.failure(api, kind);
        AzureError::Exhausted {
            api,
            attempts,
            last,
            kind,
        }
    }
}

/// Why one request gave no reply.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No answer, a broken body, a timeout: worth another attempt.
    Failed(String),
    /// The body is larger than the policy allows: final.
    TooLarge(usize),
}

/// Sends one request and reads the whole body within the policy's timeout, at most
/// `max_response_bytes` of it (announced by `Content-Length` or counted as it arrives).
pub(crate) async fn send_once(
    req: reqwest::RequestBuilder,
    policy: &RetryPolicy,
) -> Result<Reply, SendError> {
    let limit = policy.max_response_bytes;
    let fut = async {
        let mut res = req
            .send()
            .await
            .map_err(|e| SendError::Failed(describe(&e)))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        if res
            .content_length()
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(SendError::TooLarge(limit));
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| SendError::Failed(describe(&e)))?
        {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(SendError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            headers,
            body: body.freeze(),
        })
    };
    match tokio::time::timeout(policy.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Failed(format!(
            "timed out after {:?}",
            policy.timeout
        ))),
    }
}

/// A transport error in one line, without the URL (it may carry a skip token; never a secret, but
/// long and useless in a report).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body read failed"
    } else {
        "transport error"
    };
    let mut msg = kind.to_owned();
    let mut src = std::error::Error::source(e);
    if let Some(s) = src.take() {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(headers: &[(&'static str, &'static str)]) -> Reply {
        Reply::for_test(429, headers)
    }

    #[test]
    fn retry_after_seconds_may_be_fractional() {
        assert_eq!(
            server_delay(&reply(&[("retry-after", "2.128")])),
            Some(Duration::from_secs_f64(2.128))
        );
        assert_eq!(
            server_delay(&reply(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn retry_after_http_date_in_the_past_is_zero() {
        assert_eq!(
            server_delay(&reply(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")])),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn quota_reset_header_is_hh_mm_ss() {
        assert_eq!(
            server_delay(&reply(&[("x-ms-user-quota-resets-after", "00:00:03")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_hms("01:02:03.5"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_hms("garbage"), None);
        assert_eq!(parse_hms("00:99:00"), None);
    }

    #[test]
    fn garbage_retry_after_is_ignored() {
        assert_eq!(server_delay(&reply(&[("retry-after", "soon")])), None);
        assert_eq!(server_delay(&reply(&[("retry-after", "-1")])), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let d0 = p.backoff(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d5 = p.backoff(5);
            assert!(d5 >= Duration::from_millis(200) && d5 <= Duration::from_millis(400));
        }
    }

    #[test]
    fn paging_links_stay_on_the_configured_endpoint_and_path() {
        let e = "http://127.0.0.1:8080/v1.0/servicePrincipals?$top=999";
        assert_eq!(
            follow_link(
                e,
                "http://127.0.0.1:8080/v1.0/servicePrincipals?$skiptoken=a"
            )
            .as_deref(),
            Some("http://127.0.0.1:8080/v1.0/servicePrincipals?$skiptoken=a")
        );
        assert_eq!(
            follow_link(
                "http://127.0.0.1:8080/subscriptions?api-version=1",
                "/subscriptions?api-version=1&$skiptoken=2"
            )
            .as_deref(),
            Some("http://127.0.0.1:8080/subscriptions?api-version=1&$skiptoken=2")
        );
        // The path compares case-insensitively, as Graph and ARM route.
        assert!(follow_link(e, "/V1.0/serviceprincipals?$skiptoken=a").is_some());
        for refused in [
            // Another host, scheme or port: the token would go there.
            "https://graph.microsoft.com/v1.0/servicePrincipals?$skiptoken=a",
            "http://127.0.0.2:8080/v1.0/servicePrincipals?$skiptoken=a",
            "http://127.0.0.1:8081/v1.0/servicePrincipals?$skiptoken=a",
            "//evil.example/v1.0/servicePrincipals",
            "http://user:pw@127.0.0.1:8080/v1.0/servicePrincipals",
            // Another listing on the same host.
            "/v1.0/users?$skiptoken=a",
            "/v1.0/servicePrincipals/../users",
            "/v1.0/servicePrincipals/x",
            "http://127.0.0.1:8080/v1.0/servicePrincipals#frag",
            "not a url at all \u{0}",
        ] {
            assert_eq!(follow_link(e, refused), None, "{refused}");
        }
    }

    #[test]
    fn absurd_numbers_in_headers_saturate_instead_of_panicking() {
        for (h, v) in [
            ("retry-after", "99999999999999999999"),
            ("retry-after", "1e308"),
            ("retry-after-ms", "1e308"),
            ("x-ms-retry-after-ms", "18446744073709551615000"),
            ("x-ms-user-quota-resets-after", "99999999999:00:00"),
            ("x-ms-user-quota-resets-after", "18446744073709551615:59:59"),
            ("x-ms-user-quota-resets-after", "00:00:99999999999999"),
        ] {
            let d = server_delay(&reply(&[(h, v)])).expect(v);
            assert_eq!(d, FOREVER, "{h}: {v}");
        }
        for (h, v) in [
            ("retry-after", "NaN"),
            ("retry-after", "inf"),
            ("retry-after", "-5"),
            ("retry-after-ms", "-1"),
            ("x-ms-user-quota-resets-after", "-1:00:00"),
        ] {
            assert_eq!(server_delay(&reply(&[(h, v)])), None, "{h}: {v}");
        }
        // A date far in the future is a long wait, not a panic.
        let far = server_delay(&reply(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]))
            .expect("date");
        assert!(far > Duration::from_secs(86_400 * 365));
        assert_eq!(parse_count("-5"), Some(0));
        assert_eq!(parse_count("-9223372036854775808"), Some(0));
        assert_eq!(parse_count("99999999999999999999"), None);
        assert_eq!(parse_count("250"), Some(250));
    }
}
