//! The HTTP policy shared by every Azure call: per-request timeout, bounded retries with exponential
//! backoff and jitter on 429/500/502/503/504 and connection errors, `Retry-After` (seconds, possibly
//! fractional, or an HTTP date), Resource Graph's `x-ms-user-quota-resets-after`, one token refresh on a
//! 401 that says the token is bad, and a fresh client request id on every attempt.
//!
//! Sources: Graph throttling guidance (G-THR: honour `Retry-After`, may be fractional; exponential
//! backoff without it), Graph best practices (G-BP: 503 like 429, fresh `client-request-id`), ARM
//! throttling (ARM-THR: 429 + `Retry-After` seconds), Resource Graph throttling (ARG-THR: quota headers).

use super::auth::TokenProvider;
use super::{Api, AzureError, Counters, Reply};
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
    /// Cap of a server-requested wait (`Retry-After`); a longer request is honoured up to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
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

/// The server's requested wait, from `Retry-After` (delta-seconds, fractional as Graph sends it, or an
/// HTTP date), `retry-after-ms` / `x-ms-retry-after-ms`, or Resource Graph's
/// `x-ms-user-quota-resets-after` (`hh:mm:ss`).
pub fn server_delay(reply: &Reply) -> Option<Duration> {
    if let Some(v) = reply
        .header("retry-after-ms")
        .or_else(|| reply.header("x-ms-retry-after-ms"))
        && let Ok(ms) = v.trim().parse::<f64>()
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    if let Some(v) = reply.header("retry-after") {
        let v = v.trim();
        if let Ok(s) = v.parse::<f64>() {
            if s.is_finite() && s >= 0.0 {
                return Some(Duration::from_secs_f64(s.min(86_400.0)));
            }
        } else if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
            return Some(Duration::from_millis(
                u64::try_from(secs.max(0)).unwrap_or(0),
            ));
        }
    }
    reply
        .header("x-ms-user-quota-resets-after")
        .and_then(parse_hms)
}

/// The remaining request budget a reply announces: Resource Graph's `x-ms-user-quota-remaining`
/// (ARG-THR) or ARM's `x-ms-ratelimit-remaining-subscription-reads` / `-tenant-reads` (ARM-THR).
pub fn quota_remaining(reply: &Reply) -> Option<i64> {
    [
        "x-ms-user-quota-remaining",
        "x-ms-ratelimit-remaining-subscription-reads",
        "x-ms-ratelimit-remaining-tenant-reads",
    ]
    .iter()
    .find_map(|h| reply.header(h).and_then(|v| v.trim().parse().ok()))
}

/// Parses `hh:mm:ss` (optionally with fractional seconds), the format of `x-ms-user-quota-resets-after`.
pub fn parse_hms(v: &str) -> Option<Duration> {
    let mut parts = v.trim().split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !s.is_finite() || s < 0.0 || m >= 60 {
        return None;
    }
    Some(Duration::from_secs(h * 3600 + m * 60) + Duration::from_secs_f64(s))
}

/// The URL to request for a paging link (`@odata.nextLink`, `nextLink`). A link on the configured
/// endpoint is followed as is; a relative link, or one naming another host (a gateway that rewrote it,
/// say), is rebased onto the endpoint's origin, so a bearer token never goes anywhere but the configured
/// endpoint. `None` when the link is not a URL at all.
pub fn follow_link(endpoint: &str, link: &str) -> Option<String> {
    let base = url::Url::parse(endpoint).ok()?;
    let target = base.join(link).ok()?;
    let same = target.scheme() == base.scheme()
        && target.host_str().map(str::to_ascii_lowercase)
            == base.host_str().map(str::to_ascii_lowercase)
        && target.port_or_known_default() == base.port_or_known_default();
    if same {
        return Some(target.into());
    }
    let mut rebased = base;
    rebased.set_path(target.path());
    rebased.set_query(target.query());
    tracing::debug!("paging link on another host rebased onto the configured endpoint");
    Some(rebased.into())
}

/// What a caller makes of a final reply.
pub enum Handled<T> {
    Done(T),
    /// The reply was unusable (e.g. a truncated body); counts as a failed attempt.
    Retry(String),
}

/// One request to send.
pub struct Call<'a> {
    pub api: Api,
    pub tenant: &'a str,
    pub method: reqwest::Method,
    pub url: &'a str,
    pub json: Option<&'a serde_json::Value>,
}

impl<'a> Call<'a> {
    pub fn get(api: Api, tenant: &'a str, url: &'a str) -> Self {
        Self {
            api,
            tenant,
            method: reqwest::Method::GET,
            url,
            json: None,
        }
    }
}

/// The client every Azure call goes through.
#[derive(Clone)]
pub struct AzureHttp {
    client: reqwest::Client,
    policy: RetryPolicy,
    tokens: Arc<TokenProvider>,
    counters: Arc<Counters>,
    graph_scope: String,
    arm_scope: String,
}

impl AzureHttp {
    pub fn new(
        client: reqwest::Client,
        policy: RetryPolicy,
        tokens: Arc<TokenProvider>,
        counters: Arc<Counters>,
        graph_scope: String,
        arm_scope: String,
    ) -> Self {
        Self {
            client,
            policy,
            tokens,
            counters,
            graph_scope,
            arm_scope,
        }
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn scope(&self, api: Api) -> &str {
        match api {
            Api::Graph => &self.graph_scope,
            _ => &self.arm_scope,
        }
    }

    /// Sends `call` under the policy and hands each final reply to `handle`.
    pub async fn execute<T>(
        &self,
        call: &Call<'_>,
        mut handle: impl FnMut(Reply) -> Handled<T>,
    ) -> Result<T, AzureError> {
        let api = call.api;
        let mut attempts = 0u32;
        let mut refreshed = false;
        loop {
            attempts += 1;
            let token = self.tokens.token(call.tenant, self.scope(api)).await?;
            let mut req = self
                .client
                .request(call.method.clone(), call.url)
                .bearer_auth(token.as_str());
            // Graph wants `client-request-id` (G-BP); ARM `x-ms-client-request-id` (RPC).
            let rid = uuid::Uuid::new_v4().to_string();
            req = match api {
                Api::Graph => req.header("client-request-id", rid),
                _ => req.header("x-ms-client-request-id", rid),
            };
            if let Some(body) = call.json {
                req = req.json(body);
            }
            let outcome = send_once(req, self.policy.timeout).await;
            self.counters.request(api);
            self.counters
                .answered(api, outcome.as_ref().ok().map(|r| r.status));
            let failure = match outcome {
                Err(e) => e,
                Ok(reply) => {
                    if let Some(q) = quota_remaining(&reply) {
                        self.counters.quota_remaining(api, q);
                    }
                    if reply.status == 429 {
                        self.counters.throttled(api);
                    }
                    if reply.status == 401 && !refreshed && token_was_rejected(&reply) {
                        // Refreshed once on a 401 that blames the token (expired, revoked); a second
                        // 401 goes to the caller.
                        refreshed = true;
                        self.tokens.invalidate(call.tenant, self.scope(api));
                        attempts -= 1;
                        continue;
                    }
                    if is_transient(reply.status) {
                        let why = format!("HTTP {}", reply.status);
                        if attempts > self.policy.max_retries {
                            self.counters.failure(api);
                            return Err(AzureError::Exhausted {
                                api,
                                attempts,
                                last: why,
                            });
                        }
                        let delay = server_delay(&reply)
                            .map(|d| d.min(self.policy.max_retry_after))
                            .unwrap_or_else(|| self.policy.backoff(attempts - 1));
                        tracing::debug!(api = %api, status = reply.status, ?delay, "transient answer, retrying");
                        self.counters.retry(api);
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    match handle(reply) {
                        Handled::Done(v) => return Ok(v),
                        Handled::Retry(why) => why,
                    }
                }
            };
            if attempts > self.policy.max_retries {
                self.counters.failure(api);
                return Err(AzureError::Exhausted {
                    api,
                    attempts,
                    last: failure,
                });
            }
            tracing::debug!(api = %api, error = %failure, "attempt failed, retrying");
            self.counters.retry(api);
            tokio::time::sleep(self.policy.backoff(attempts - 1)).await;
        }
    }

    /// GET or POST a JSON document: 2xx bodies must decode as `T` (a body that does not is retried, then
    /// an error — never an empty result); other statuses become [`AzureError::Status`].
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        call: &Call<'_>,
        what: &'static str,
    ) -> Result<(T, Reply), AzureError> {
        let api = call.api;
        let mut last_decode = None;
        let res = self
            .execute(call, |reply| {
                if !reply.is_success() {
                    return Handled::Done(Err(reply.into_status_error(api)));
                }
                match reply.json::<T>(api, what) {
                    Ok(v) => Handled::Done(Ok((v, reply))),
                    Err(e) => {
                        let msg = e.to_string();
                        last_decode = Some(e);
                        Handled::Retry(msg)
                    }
                }
            })
            .await;
        match res {
            Ok(inner) => inner,
            Err(AzureError::Exhausted { .. }) if last_decode.is_some() => {
                Err(last_decode.expect("checked"))
            }
            Err(e) => Err(e),
        }
    }
}

/// A 401 whose error code blames the token itself. `InvalidAuthenticationTokenTenant` is not one: it is
/// ARM's answer for a subscription of another tenant, and a new token would not change it.
fn token_was_rejected(reply: &Reply) -> bool {
    match reply.error_body() {
        Some((code, _)) => {
            !code.eq_ignore_ascii_case("InvalidAuthenticationTokenTenant")
                && (code.eq_ignore_ascii_case("InvalidAuthenticationToken")
                    || code.eq_ignore_ascii_case("ExpiredAuthenticationToken")
                    || code.eq_ignore_ascii_case("AuthenticationFailed")
                    || code.eq_ignore_ascii_case("InvalidAuthenticationTokenAudience"))
        }
        // No body: a plain 401 from a gateway; one refresh is cheap.
        None => reply.body.is_empty(),
    }
}

/// Sends one request and reads the whole body within `timeout`.
pub(crate) async fn send_once(
    req: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<Reply, String> {
    let fut = async {
        let res = req.send().await.map_err(|e| describe(&e))?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.map_err(|e| describe(&e))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
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
    use reqwest::header::{HeaderMap, HeaderValue};

    fn reply(headers: &[(&'static str, &'static str)]) -> Reply {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        Reply {
            status: 429,
            headers: h,
            body: bytes::Bytes::new(),
        }
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
    fn paging_links_stay_on_the_configured_endpoint() {
        let e = "http://127.0.0.1:8080";
        assert_eq!(
            follow_link(e, "http://127.0.0.1:8080/v1.0/x?$skiptoken=a").as_deref(),
            Some("http://127.0.0.1:8080/v1.0/x?$skiptoken=a")
        );
        assert_eq!(
            follow_link(e, "https://graph.microsoft.com/v1.0/x?$skiptoken=a").as_deref(),
            Some("http://127.0.0.1:8080/v1.0/x?$skiptoken=a")
        );
        assert_eq!(
            follow_link(e, "/subscriptions?api-version=1&$skiptoken=2").as_deref(),
            Some("http://127.0.0.1:8080/subscriptions?api-version=1&$skiptoken=2")
        );
        assert_eq!(
            follow_link("https://graph.microsoft.com", "https://evil.example/v1.0/x").as_deref(),
            Some("https://graph.microsoft.com/v1.0/x")
        );
    }

    #[test]
    fn wrong_tenant_401_is_not_a_token_problem() {
        let mut r = reply(&[]);
        r.status = 401;
        r.body = bytes::Bytes::from_static(
            br#"{"error":{"code":"InvalidAuthenticationTokenTenant","message":"x"}}"#,
        );
        assert!(!token_was_rejected(&r));
        r.body = bytes::Bytes::from_static(
            br#"{"error":{"code":"ExpiredAuthenticationToken","message":"x"}}"#,
        );
        assert!(token_was_rejected(&r));
    }
}
