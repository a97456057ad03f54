//! The Entra token endpoint (client-credentials grant: a client secret, a certificate's signed
//! assertion, or a workload identity's federated token), the managed identity endpoints (IMDS and
//! App Service), and the bearer-token check every other service makes.

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

/// An AADSTS error answer.
pub(crate) fn aad_error(status: u16, error: &str, code: u32, text: &str) -> Response {
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
pub(crate) fn check_client(
    w: &World,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Result<(), Response> {
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
    Ok(())
}

/// The service a `.default` scope (or a managed identity's `resource`) asks a token for (`None`: a
/// scope Entra refuses here).
pub(crate) fn audience_of(scope: &str) -> Option<Audience> {
    let scope = scope.trim_end_matches("/.default").trim_end_matches('/');
    let scope = &format!("{scope}/.default");
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
pub(crate) fn issue(inner: &Inner, w: &World, audience: Audience) -> Response {
    let (value, lifetime) = new_token(inner, w, audience);
    respond(
        200,
        vec![],
        &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": value}),
    )
}

/// A new access token for `audience` in the world's tenant, and its lifetime in seconds.
pub(crate) fn new_token(inner: &Inner, w: &World, audience: Audience) -> (String, u64) {
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
    (value, lifetime)
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
