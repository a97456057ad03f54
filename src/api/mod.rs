//! Publish (HTTP): the JSON API under `/api/v1`, `/metrics`, `/healthz`, `/readyz` (axum).
//!
//! Errors are `application/problem+json` (RFC 9457) and never carry internal error text. Lists are
//! `{ "items": [...], "next_cursor": "opaque" | null }` with `limit` 1–1000 (default 100). Mutating
//! endpoints need `Authorization: Bearer <token>` (`[http] api_token`); without a configured token they
//! are disabled (403). Reads are open unless `[http] require_token_for_reads` (then every request but
//! `/healthz`, `/readyz` and `/metrics` needs the token, unknown paths included, before any handler
//! runs); `/metrics` has its own `[http] metrics_require_token`.

mod openapi;
mod page;
mod routes;

use crate::config::Secret;
use crate::domain::TenantId;
use crate::metrics::Metrics;
use crate::scheduler::ScanRunner;
use crate::store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Metrics,
    pub runner: Arc<ScanRunner>,
    pub api_token: Option<Secret>,
    /// Reads (everything but the health checks and metrics) need the token.
    pub require_token_for_reads: bool,
    /// `/metrics` needs the token.
    pub metrics_require_token: bool,
    pub tenants: Arc<Vec<TenantId>>,
}

/// Largest request body accepted (the only bodies are small JSON documents).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Longest a request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    let (routes, doc) = routes::routes();
    routes::keep_document(doc);
    routes
        // The page for people (HTML, not part of the JSON API's document).
        .route("/", axum::routing::get(page::index))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        // The layers above answer 413 and 503 with a bare body; every error is a problem.
        .layer(axum::middleware::map_response(bare_errors_as_problems))
        // Outermost: a request without the token is refused before a body is read or a route matched.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

/// Whether a request to `path` needs the bearer token before any handler sees it. Mutating endpoints
/// check it themselves as well (they need it whatever this says).
fn token_required(state: &AppState, path: &str) -> bool {
    match path {
        "/healthz" | "/readyz" => false,
        "/metrics" => state.metrics_require_token,
        _ => state.require_token_for_reads,
    }
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if token_required(&state, req.uri().path())
        && let Err(mut p) = authorize(&state, req.headers())
    {
        // A browser cannot send a bearer token; it can send the token as the Basic password (any
        // user name), which it asks for when told the realm. Reads only: mutations take the bearer.
        let read = matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        if read && basic_password_matches(&state, req.headers()) {
            return next.run(req).await;
        }
        if read && p.status == StatusCode::UNAUTHORIZED {
            p.headers.push((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"miaudit\", charset=\"UTF-8\""),
            ));
        }
        return p.into_response();
    }
    next.run(req).await
}

/// `Authorization: Basic` whose password is the API token (compared in constant time).
fn basic_password_matches(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.api_token else {
        return false;
    };
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let password = match decoded.iter().position(|b| *b == b':') {
        Some(i) => &decoded[i + 1..],
        None => return false,
    };
    constant_time_eq(password, expected.expose().as_bytes())
}

/// A 413 or 503 that a layer answered with a bare body becomes a problem like every other error.
async fn bare_errors_as_problems(res: Response) -> Response {
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return res;
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            status,
            format!("the body is larger than {} KiB", BODY_LIMIT / 1024),
        )
        .into_response(),
        StatusCode::SERVICE_UNAVAILABLE => {
            Problem::new(status, "the request took too long; retry later").into_response()
        }
        _ => res,
    }
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// A store failure: logged and counted once here; the client learns only that it failed.
    pub fn internal(metrics: &Metrics, e: &dyn std::fmt::Display) -> Self {
        metrics.store_errors.inc();
        tracing::error!(error = %e, "request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not available right now; retry later",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut res = (self.status, body.to_string()).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (k, v) in self.headers {
            res.headers_mut().append(k, v);
        }
        res
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// Checks the bearer token of a request (constant-time comparison).
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let Some(expected) = &state.api_token else {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: no API token is configured (http.api_token)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.expose().as_bytes()) => Ok(()),
        _ => {
            let mut p = Problem::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            p.headers
                .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            Err(p)
        }
    }
}

/// Query parameters, each at most once, only the names an endpoint knows.
pub struct Params(HashMap<String, String>);

impl Params {
    /// The query of an endpoint whose parameters `P` describes in the OpenAPI document: the names it
    /// accepts are the names the document gives, so the two cannot differ.
    pub fn of<P: utoipa::IntoParams>(raw: Option<&str>) -> Result<Self, Problem> {
        let names: Vec<String> = P::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query))
            .into_iter()
            .map(|p| p.name)
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Self::parse(raw, &names)
    }

    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, Problem> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {:?}; this endpoint takes: {}",
                    truncate(&k),
                    allowed.join(", ")
                )));
            }
            if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(Problem::bad_request(format!(
                    "query parameter {k:?} given twice"
                )));
            }
        }
        Ok(Self(map))
    }

    /// A text parameter; an empty one is as if absent (a form's empty field).
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A typed parameter (a number, a boolean, one of a set): present means non-empty.
    pub fn typed(&self, k: &str) -> Result<Option<&str>, Problem> {
        match self.0.get(k).map(String::as_str) {
            Some("") => Err(Problem::bad_request(format!("{k} must not be empty"))),
            v => Ok(v),
        }
    }

    /// `limit`: 1–1000, default 100.
    pub fn limit(&self) -> Result<u32, Problem> {
        match self.typed("limit")? {
            None => Ok(100),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(Problem::bad_request(
                    "limit must be a whole number from 1 to 1000",
                )),
            },
        }
    }

    /// Parses an enumerated value, naming the allowed ones on error.
    pub fn one_of<T>(
        &self,
        k: &str,
        parse: impl Fn(&str) -> Option<T>,
        allowed: &str,
    ) -> Result<Option<T>, Problem> {
        match self.typed(k)? {
            None => Ok(None),
            Some(v) => parse(v)
                .map(Some)
                .ok_or_else(|| Problem::bad_request(format!("{k} must be one of {allowed}"))),
        }
    }
}

/// Shortens echoed input so a hostile parameter never bloats an answer.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Opaque cursors: base64url of a JSON array of strings.
pub fn encode_cursor(parts: &[&str]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(parts).unwrap_or_default())
}

pub fn decode_cursor(c: &str, n: usize) -> Result<Vec<String>, Problem> {
    let bad = || Problem::bad_request("cursor is not valid; use next_cursor from a previous page");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let parts: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if parts.len() != n || parts.iter().any(|p| p.len() > 512) {
        return Err(bad());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(&["t", "o"]);
        assert_eq!(decode_cursor(&c, 2).expect("valid"), vec!["t", "o"]);
        assert!(decode_cursor("!!!", 2).is_err());
        assert!(decode_cursor(&c, 3).is_err());
        assert!(decode_cursor(&encode_cursor(&["x"]), 2).is_err());
    }

    #[test]
    fn params_refuse_unknown_and_repeated_names() {
        assert!(Params::parse(Some("limit=5"), &["limit"]).is_ok());
        assert!(Params::parse(Some("limti=5"), &["limit"]).is_err());
        assert!(Params::parse(Some("limit=5&limit=6"), &["limit"]).is_err());
        let p = Params::parse(Some("limit=0"), &["limit"]).expect("parsed");
        assert!(p.limit().is_err());
        let p = Params::parse(Some("limit=1001"), &["limit"]).expect("parsed");
        assert!(p.limit().is_err());
    }
}
