//! What every handler answers with: a JSON response, ARM's and Graph's request-id headers and error
//! bodies, and the small encodings the services' paging tokens use.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use std::time::Duration;

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn respond(status: u16, headers: Vec<(&'static str, String)>, body: &Value) -> Response {
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = res.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    res
}

/// ARM's error envelope and evidence headers (RPC common API details: `x-ms-request-id`,
/// `x-ms-correlation-request-id`, `x-ms-routing-request-id`).
pub(crate) fn arm_headers(req: &HeaderMap) -> Vec<(&'static str, String)> {
    let rid = new_id();
    let corr = req
        .get("x-ms-correlation-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(new_id, str::to_owned);
    let mut h = vec![
        ("x-ms-request-id", rid.clone()),
        ("x-ms-correlation-request-id", corr),
        (
            "x-ms-routing-request-id",
            format!(
                "WESTEUROPE:{}:{rid}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ),
        ),
    ];
    if let Some(c) = req
        .get("x-ms-client-request-id")
        .and_then(|v| v.to_str().ok())
    {
        h.push(("x-ms-client-request-id", c.to_owned()));
    }
    h
}

pub(crate) fn arm_error(req: &HeaderMap, status: u16, code: &str, message: &str) -> Response {
    respond(
        status,
        arm_headers(req),
        &json!({ "error": { "code": code, "message": message } }),
    )
}

/// Graph's error body with `innerError` (G-ERR; Graph error response schema).
pub(crate) fn graph_error(req: &HeaderMap, status: u16, code: &str, message: &str) -> Response {
    let rid = new_id();
    let crid = req
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| rid.clone(), str::to_owned);
    respond(
        status,
        vec![
            ("request-id", rid.clone()),
            ("client-request-id", crid.clone()),
        ],
        &json!({ "error": { "code": code, "message": message, "innerError": {
            "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
            "request-id": rid, "client-request-id": crid } } }),
    )
}

pub(crate) fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

pub(crate) fn unb64(s: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A small stable hash for skip-token fingerprints.
pub(crate) fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn hms(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}
