//! The Entra token endpoint (client-credentials grant) and the bearer-token check every other service
//! makes.

use crate::Inner;
use crate::model::World;
use crate::respond::{arm_error, graph_error, new_id, respond};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(crate) struct TokenInfo {
    tenant: String,
    audience: Audience,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    Graph,
    Arm,
}

/// The client-credentials grant (CC doc): form body, one `.default` scope; AADSTS errors with
/// `error`, `error_description`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
pub(crate) fn token(inner: &Inner, path: &str, body: &[u8]) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let tenant = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let w = inner.world.read().expect("world lock");
    if let Err(r) = check_client(&w, &tenant, &form) {
        return r;
    }
    let scope = form.get("scope").map(String::as_str).unwrap_or("");
    let Some(audience) = audience_of(scope) else {
        return aad_error(
            400,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        );
    };
    issue(inner, &w, audience)
}

/// An AADSTS error answer.
fn aad_error(status: u16, error: &str, code: u32, text: &str) -> Response {
    respond(
        status,
        vec![],
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}", new_id(), new_id(), chrono::Utc::now().to_rfc3339()),
            "error_codes": [code],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": new_id(),
            "correlation_id": new_id(),
        }),
    )
}

/// The grant type, tenant, client id and secret, checked in Entra's order.
fn check_client(w: &World, tenant: &str, form: &HashMap<String, String>) -> Result<(), Response> {
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err(aad_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    if tenant != w.tenant_id {
        return Err(aad_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."
            ),
        ));
    }
    if form.get("client_id") != Some(&w.client_id) {
        return Err(aad_error(
            400,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                form.get("client_id").map_or("", String::as_str)
            ),
        ));
    }
    if form.get("client_secret") != Some(&w.client_secret) {
        return Err(aad_error(
            401,
            "invalid_client",
            7_000_215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        ));
    }
    Ok(())
}

/// The service a `.default` scope asks a token for (`None`: a scope Entra refuses here).
fn audience_of(scope: &str) -> Option<Audience> {
    if scope.ends_with("graph.microsoft.com/.default")
        || scope.ends_with("graph.microsoft.us/.default")
        || scope.ends_with("microsoftgraph.chinacloudapi.cn/.default")
    {
        Some(Audience::Graph)
    } else if scope.ends_with("management.azure.com/.default")
        || scope.ends_with("management.azure.com//.default")
        || scope.ends_with("management.usgovcloudapi.net/.default")
        || scope.ends_with("management.chinacloudapi.cn/.default")
        || scope.ends_with("management.core.windows.net/.default")
    {
        Some(Audience::Arm)
    } else {
        None
    }
}

/// Issues a token for `audience` and answers with it.
fn issue(inner: &Inner, w: &World, audience: Audience) -> Response {
    let lifetime = inner
        .config
        .read()
        .expect("config lock")
        .token_lifetime_secs;
    let value = format!(
        "sim.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(new_id())
    );
    inner.tokens.lock().expect("tokens lock").insert(
        value.clone(),
        TokenInfo {
            tenant: w.tenant_id.clone(),
            audience,
            expires: Instant::now() + Duration::from_secs(lifetime),
        },
    );
    respond(
        200,
        vec![],
        &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": value}),
    )
}

/// Checks the bearer token; `Err` is the response the service gives.
pub(crate) fn authorize(
    inner: &Inner,
    headers: &HeaderMap,
    want: Audience,
) -> Result<String, Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let tokens = inner.tokens.lock().expect("tokens lock");
    let info = token.and_then(|t| tokens.get(t));
    let fail = |code: &str, msg: &str| match want {
        Audience::Graph => graph_error(headers, 401, "InvalidAuthenticationToken", msg),
        Audience::Arm => arm_error(headers, 401, code, msg),
    };
    match (token, info) {
        (None, _) => Err(fail(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )),
        (Some(_), None) => Err(fail(
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )),
        (Some(_), Some(i)) if Instant::now() >= i.expires => Err(fail(
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        )),
        (Some(_), Some(i)) if i.audience != want => Err(fail(
            "InvalidAuthenticationTokenAudience",
            "The access token has been obtained for wrong audience or resource.",
        )),
        (Some(_), Some(i)) => Ok(i.tenant.clone()),
    }
}
