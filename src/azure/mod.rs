//! Everything every Azure call shares: which API a call goes to, the error type, the reply with its
//! request ids, request counters, the retry policy (`http`) and token credentials (`auth`).
//! Graph and ARM share the `{"error":{"code","message"}}` error body (RPC; Graph errors doc), so one
//! type serves both.

pub mod auth;
pub mod http;
pub mod transport;

use std::sync::atomic::{AtomicU64, Ordering};

/// The four services miaudit talks to. Used for counters, metrics labels and token audiences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Token,
    Graph,
    ResourceGraph,
    Arm,
}

impl Api {
    pub const ALL: [Api; 4] = [Api::Token, Api::Graph, Api::ResourceGraph, Api::Arm];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Graph => "graph",
            Self::ResourceGraph => "resource_graph",
            Self::Arm => "arm",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure an Azure call ended in: what callers and the metrics act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 429s until retries ran out, or a requested wait longer than allowed.
    Throttled,
    /// 5xx, timeouts, connections that failed, until retries ran out.
    Transient,
    /// 401/403, a token refused.
    Denied,
    /// 404/410.
    NotFound,
    /// An answer that is not what the API documents: a body that does not decode, too large, a paging
    /// link elsewhere, a redirect, another status.
    Malformed,
    /// The scan's own working database failed (not Azure).
    Storage,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Throttled,
        ErrorKind::Transient,
        ErrorKind::Denied,
        ErrorKind::NotFound,
        ErrorKind::Malformed,
        ErrorKind::Storage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::Denied => "denied",
            Self::NotFound => "not_found",
            Self::Malformed => "malformed",
            Self::Storage => "storage",
        }
    }

    /// The kind of a final status.
    pub fn of_status(status: u16) -> Self {
        match status {
            429 => Self::Throttled,
            500..=599 => Self::Transient,
            401 | 403 => Self::Denied,
            404 | 410 => Self::NotFound,
            _ => Self::Malformed,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Errors of Azure calls that callers act on.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// Retries are used up (throttling, 5xx, timeouts, connection errors, unreadable bodies).
    #[error("{api} request gave no usable answer after {attempts} attempts (last: {last})")]
    Exhausted {
        api: Api,
        attempts: u32,
        last: String,
        /// What the last attempt met.
        kind: ErrorKind,
    },
    /// The token endpoint refused the credentials; the message names the AADSTS code, never the secret.
    #[error("{0}")]
    Auth(String),
    /// A final, non-retryable error status.
    #[error("{api} answered HTTP {status} {code}: {message}")]
    Status {
        api: Api,
        status: u16,
        code: String,
        message: String,
    },
    /// A 2xx answer whose body is not what the API documents.
    #[error("{api} answered with a body that does not decode as {what}: {detail}")]
    Decode {
        api: Api,
        what: &'static str,
        detail: String,
    },
    /// A paging link that points away from the configured endpoint or from the listing being paged (we
    /// never send tokens elsewhere, nor read another listing as the next page).
    #[error(
        "refusing to follow a {api} paging link that leaves the configured endpoint or listing: {}",
        shorten(link)
    )]
    ForeignLink { api: Api, link: String },
    /// The service asked to wait longer than `[scan] max_server_wait`.
    #[error(
        "{api} asked to wait {asked:?} before retrying, longer than the configured maximum of {max:?}"
    )]
    WaitTooLong {
        api: Api,
        asked: std::time::Duration,
        max: std::time::Duration,
    },
    /// A response body larger than `[scan] max_response_bytes`.
    #[error("{api} answered with a body larger than {limit} bytes (max_response_bytes)")]
    TooLarge { api: Api, limit: usize },
    /// The page could not be staged (the scan's working rows in the database).
    #[error("the scan's working rows could not be written: {0}")]
    Staging(String),
}

impl AzureError {
    /// What kind of failure this is (metrics label it so; callers decide by it).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Exhausted { kind, .. } => *kind,
            Self::Auth(_) => ErrorKind::Denied,
            Self::Status { status, .. } => ErrorKind::of_status(*status),
            Self::Decode { .. } | Self::ForeignLink { .. } | Self::TooLarge { .. } => {
                ErrorKind::Malformed
            }
            Self::WaitTooLong { .. } => ErrorKind::Throttled,
            Self::Staging(_) => ErrorKind::Storage,
        }
    }
}

/// At most 200 characters of text from a service, for an error message, with anything that looks like
/// a credential cut out (see [`redact`]).
pub fn shorten(s: &str) -> String {
    let head: String = s.chars().take(400).collect();
    let mut out: String = redact(&head).chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Text from a service (an error page, a message) with what looks like a credential replaced by
/// `[redacted]`: the word after `Bearer`, and JWT-shaped runs (`eyJ…`). A proxy's error page may echo
/// the request's `Authorization` header, and that text goes into reports, logs and the API.
pub fn redact(text: &str) -> String {
    let token_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+' | '/' | '~');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let lower = rest.to_ascii_lowercase();
        let bearer = lower.find("bearer ").map(|i| (i, i + "bearer ".len()));
        let jwt = lower.find("eyj").map(|i| (i, i));
        let next = match (bearer, jwt) {
            (Some(b), Some(j)) => Some(if b.0 <= j.0 { b } else { j }),
            (b, j) => b.or(j),
        };
        let Some((at, from)) = next else {
            out.push_str(rest);
            break;
        };
        let tail = &rest[from..];
        let skipped = tail.len() - tail.trim_start().len();
        let tail = &tail[skipped..];
        let run = tail.find(|c: char| !token_char(c)).unwrap_or(tail.len());
        if run >= 8 {
            out.push_str(&rest[..from + skipped]);
            out.push_str("[redacted]");
            rest = &tail[run..];
        } else {
            let step = from.max(at + 1);
            let step = (step..=rest.len())
                .find(|i| rest.is_char_boundary(*i))
                .unwrap_or(rest.len());
            out.push_str(&rest[..step]);
            rest = &rest[step..];
        }
    }
    out
}

/// Empty pages in a row after which a listing is given up as endless: Graph and Resource Graph may return
/// an empty page now and then (G-PAGE), never dozens in a row; a service that keeps sending fresh links to
/// empty pages would otherwise hold the scan until its deadline.
pub const MAX_EMPTY_PAGES: u32 = 50;

/// Counts empty pages in a row; `Err` once there were more than [`MAX_EMPTY_PAGES`].
#[derive(Default)]
pub struct EmptyPages(u32);

impl EmptyPages {
    pub fn saw(&mut self, api: Api, what: &'static str, items: usize) -> Result<(), AzureError> {
        self.0 = if items == 0 { self.0 + 1 } else { 0 };
        if self.0 > MAX_EMPTY_PAGES {
            return Err(AzureError::Decode {
                api,
                what,
                detail: format!("more than {MAX_EMPTY_PAGES} empty pages in a row"),
            });
        }
        Ok(())
    }
}

/// Where a paged listing puts each page as it arrives: a scan stages them in SQLite, so it never holds a
/// whole listing in memory.
pub trait PageSink<T>: Send {
    /// Takes one page; an error stops the listing.
    fn accept(
        &mut self,
        items: Vec<T>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;

    /// The listing starts over from its first page: forget every page taken so far, so that only the
    /// listing that reaches its end counts (a principal deleted meanwhile must not be audited).
    fn restart(&mut self) -> impl std::future::Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

/// A final HTTP answer: status, the headers we keep as evidence, the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    /// A reply with `status`, these headers and no body (for tests).
    #[cfg(test)]
    pub(crate) fn for_test(status: u16, headers: &[(&'static str, &'static str)]) -> Self {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, reqwest::header::HeaderValue::from_static(v));
        }
        Self {
            status,
            headers: h,
            body: bytes::Bytes::new(),
        }
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// ARM's own `x-ms-request-id` (every resource provider returns it, RPC), and only that: the mark
    /// that an answer comes from ARM and not from a proxy or a stray path.
    pub fn arm_request_id(&self) -> Option<String> {
        self.header("x-ms-request-id")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// ARM's `x-ms-request-id`, or Graph's `request-id` (RPC; G-BP).
    pub fn request_id(&self) -> Option<String> {
        self.header("x-ms-request-id")
            .or_else(|| self.header("request-id"))
            .map(str::to_owned)
    }

    pub fn correlation_request_id(&self) -> Option<String> {
        self.header("x-ms-correlation-request-id")
            .map(str::to_owned)
    }

    /// `error.code` and `error.message` of an ARM / Graph error body, when it parses.
    pub fn error_body(&self) -> Option<(String, String)> {
        #[derive(serde::Deserialize)]
        struct Body {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            code: Option<String>,
            message: Option<String>,
        }
        let b: Body = serde_json::from_slice(&self.body).ok()?;
        let code = b.error.code.filter(|c| !c.is_empty())?;
        Some((code, b.error.message.unwrap_or_default()))
    }

    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        api: Api,
        what: &'static str,
    ) -> Result<T, AzureError> {
        serde_json::from_slice(&self.body).map_err(|e| AzureError::Decode {
            api,
            what,
            // serde quotes the offending value: bounded and redacted like any text from a service.
            detail: shorten(&e.to_string()),
        })
    }

    pub fn into_status_error(self, api: Api) -> AzureError {
        let (code, message) = self.error_body().unwrap_or_else(|| {
            (
                String::new(),
                String::from_utf8_lossy(&self.body).into_owned(),
            )
        });
        AzureError::Status {
            api,
            status: self.status,
            code: shorten(&code),
            message: shorten(&message),
        }
    }
}

/// Status classes of answers, for metrics: `2xx`, `3xx`, `4xx`, `5xx`, and `error` (no answer).
pub const STATUS_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

/// Request counters per API, shared by every client of a scanner (and read by the metrics).
#[derive(Debug)]
pub struct Counters {
    requests: [AtomicU64; 4],
    throttled: [AtomicU64; 4],
    retries: [AtomicU64; 4],
    failures: [AtomicU64; 4],
    /// Failed calls per API and [`ErrorKind`].
    failure_kinds: [[AtomicU64; 6]; 4],
    by_class: [[AtomicU64; 5]; 4],
    /// Last quota remaining seen (`x-ms-user-quota-remaining`, `x-ms-ratelimit-remaining-*-reads`);
    /// `i64::MIN` when none was seen.
    quota: [std::sync::atomic::AtomicI64; 4],
    /// Counters that every count here also goes to (a tenant's counters roll up into the scanner's).
    parent: Option<std::sync::Arc<Counters>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            requests: Default::default(),
            throttled: Default::default(),
            retries: Default::default(),
            failures: Default::default(),
            failure_kinds: Default::default(),
            by_class: Default::default(),
            quota: std::array::from_fn(|_| std::sync::atomic::AtomicI64::new(i64::MIN)),
            parent: None,
        }
    }
}

/// A snapshot of [`Counters`] for one API.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct ApiCounts {
    pub requests: u64,
    pub throttled: u64,
    pub retries: u64,
    pub failures: u64,
}

impl Counters {
    /// Counters whose counts also go to `parent`.
    pub fn child_of(parent: std::sync::Arc<Counters>) -> Self {
        Self {
            parent: Some(parent),
            ..Self::default()
        }
    }

    pub(crate) fn request(&self, api: Api) {
        self.requests[api.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.request(api);
        }
    }
    /// Counts an answer (`Some(status)`) or a request that got none (`None`).
    pub(crate) fn answered(&self, api: Api, status: Option<u16>) {
        let class = match status {
            Some(200..=299) => 0,
            Some(300..=399) => 1,
            Some(400..=499) => 2,
            Some(_) => 3,
            None => 4,
        };
        self.by_class[api.index()][class].fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.answered(api, status);
        }
    }

    pub(crate) fn quota_remaining(&self, api: Api, remaining: i64) {
        self.quota[api.index()].store(remaining, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.quota_remaining(api, remaining);
        }
    }

    /// Answers per status class (see [`STATUS_CLASSES`]).
    pub fn by_class(&self, api: Api) -> [u64; 5] {
        std::array::from_fn(|i| self.by_class[api.index()][i].load(Ordering::Relaxed))
    }

    /// The last quota remaining seen, if any.
    pub fn last_quota(&self, api: Api) -> Option<i64> {
        let v = self.quota[api.index()].load(Ordering::Relaxed);
        (v != i64::MIN).then_some(v)
    }

    pub(crate) fn throttled(&self, api: Api) {
        self.throttled[api.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.throttled(api);
        }
    }
    pub(crate) fn retry(&self, api: Api) {
        self.retries[api.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.retry(api);
        }
    }
    pub(crate) fn failure(&self, api: Api, kind: ErrorKind) {
        self.failures[api.index()].fetch_add(1, Ordering::Relaxed);
        self.failure_kinds[api.index()][kind.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.failure(api, kind);
        }
    }

    /// Failed calls of `api` per [`ErrorKind`] (in the order of [`ErrorKind::ALL`]).
    pub fn failures_by_kind(&self, api: Api) -> [u64; 6] {
        std::array::from_fn(|k| self.failure_kinds[api.index()][k].load(Ordering::Relaxed))
    }

    pub fn get(&self, api: Api) -> ApiCounts {
        let i = api.index();
        ApiCounts {
            requests: self.requests[i].load(Ordering::Relaxed),
            throttled: self.throttled[i].load(Ordering::Relaxed),
            retries: self.retries[i].load(Ordering::Relaxed),
            failures: self.failures[i].load(Ordering::Relaxed),
        }
    }

    pub fn snapshot(&self) -> std::collections::BTreeMap<String, ApiCounts> {
        Api::ALL
            .into_iter()
            .map(|a| (a.as_str().to_owned(), self.get(a)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_kind() {
        let status = |status| AzureError::Status {
            api: Api::Arm,
            status,
            code: String::new(),
            message: String::new(),
        };
        assert_eq!(status(403).kind(), ErrorKind::Denied);
        assert_eq!(status(404).kind(), ErrorKind::NotFound);
        assert_eq!(status(429).kind(), ErrorKind::Throttled);
        assert_eq!(status(503).kind(), ErrorKind::Transient);
        assert_eq!(status(307).kind(), ErrorKind::Malformed);
        assert_eq!(AzureError::Auth("x".into()).kind(), ErrorKind::Denied);
        assert_eq!(
            AzureError::TooLarge {
                api: Api::Graph,
                limit: 1
            }
            .kind(),
            ErrorKind::Malformed
        );
        assert_eq!(
            AzureError::Staging("disk full".into()).kind(),
            ErrorKind::Storage
        );
    }

    #[test]
    fn endless_empty_pages_are_given_up() {
        let mut e = EmptyPages::default();
        for _ in 0..MAX_EMPTY_PAGES {
            e.saw(Api::Graph, "p", 0)
                .expect("a few empty pages are fine");
        }
        e.saw(Api::Graph, "p", 3)
            .expect("a page with items resets the count");
        for _ in 0..MAX_EMPTY_PAGES {
            e.saw(Api::Graph, "p", 0).expect("fine again");
        }
        assert!(e.saw(Api::Graph, "p", 0).is_err());
    }

    #[test]
    fn credentials_in_service_text_are_redacted() {
        let page = "<html>Bad gateway. Request headers: Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl Host: x</html>";
        let r = redact(page);
        assert!(!r.contains("eyJ0eXAi"), "{r}");
        assert!(r.contains("Bearer [redacted]"), "{r}");
        assert!(r.contains("Host: x"), "{r}");
        let bare = redact("token=eyJhbGciOiJIUzI1NiJ9.e30.abcdefgh end");
        assert!(!bare.contains("eyJhbGci"), "{bare}");
        // Ordinary text and short words stay.
        assert_eq!(
            redact("ResourceNotFound: the bearer of bad news"),
            "ResourceNotFound: the bearer of bad news"
        );
        assert_eq!(redact("naïve Ünïcode eyj"), "naïve Ünïcode eyj");
        let e = Reply {
            status: 502,
            headers: Default::default(),
            body: bytes::Bytes::from_static(
                b"proxy error; Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789",
            ),
        }
        .into_status_error(Api::Arm);
        assert!(!e.to_string().contains("abcdefghijklmnop"), "{e}");
    }
}
