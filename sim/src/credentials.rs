//! The token endpoints: how the simulated Entra checks what a client proves itself with, and the
//! managed identity endpoints (the tokens themselves, and the bearer check, are `token`'s).
//!
//! - a client secret: compared with the app's;
//! - a client assertion (`client_assertion_type` jwt-bearer): either a workload identity's federated
//!   token — its `iss` and `sub` must be the federated identity credential's, its `aud`
//!   `api://AzureADTokenExchange`, and it must be within its time range — or a JWT signed with the
//!   registered certificate's key: the header names the certificate by `x5t#S256` or `x5t`, the
//!   signature verifies (RS256 or PS256), `aud` is this token endpoint, `iss` = `sub` = the client id,
//!   `nbf` ≤ now < `exp`, and its `jti` was never seen before (CERT; docs/azure-behaviour.md §6a);
//! - IMDS: `GET /metadata/identity/oauth2/token?api-version=…&resource=…` with `Metadata: true`
//!   (400 without it), numbers as strings in the answer; App Service: `GET /msi/token?api-version=…`
//!   with `X-IDENTITY-HEADER`, `expires_on` and no `expires_in` (MI-VMTOKEN; MSAL-PY).

use crate::Inner;
use crate::model::World;
use crate::respond::respond;
use crate::token::{aad_error, audience_of, check_client, issue, new_token};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::HashMap;

/// The token endpoints: the managed identity ones by their paths (GET), else the client-credentials grant.
pub(crate) fn token(
    inner: &Inner,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let lower = path.to_ascii_lowercase();
    if lower == IMDS_PATH || lower == APP_SERVICE_PATH {
        return managed_identity(inner, lower == IMDS_PATH, query, headers);
    }
    client_credentials(inner, path, body)
}

/// The IMDS token path (MI-VMTOKEN) and the App Service one this simulator serves as `IDENTITY_ENDPOINT`.
pub(crate) const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
pub(crate) const APP_SERVICE_PATH: &str = "/msi/token";

/// The client-credentials grant (CC doc): form body, one `.default` scope; AADSTS errors with
/// `error`, `error_description`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
fn client_credentials(inner: &Inner, path: &str, body: &[u8]) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let tenant = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let w = inner.world.read().expect("world lock");
    let rejecting = credentials(inner).rejecting_tenants;
    if rejecting.iter().any(|t| t.eq_ignore_ascii_case(&tenant)) {
        return aad_error(
            400,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
                form.get("client_id").map_or("", String::as_str)
            ),
        );
    }
    if let Err(r) = check_client(&w, &tenant, &form) {
        return r;
    }
    if let Err(r) = check_proof(inner, &w, &tenant, &form) {
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

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The audience of a federated token exchanged with Entra (workload identity federation).
const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Checks the client's proof: its secret or its assertion.
pub(crate) fn check_proof(
    inner: &Inner,
    w: &World,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Result<(), Response> {
    let assertion = form.get("client_assertion");
    if let Some(secret) = form.get("client_secret") {
        if assertion.is_some() {
            return Err(aad_error(
                400,
                "invalid_request",
                90_014,
                "Only one of client_secret and client_assertion may be given.",
            ));
        }
        if secret != &w.client_secret {
            return Err(aad_error(
                401,
                "invalid_client",
                7_000_215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            ));
        }
        return Ok(());
    }
    let Some(assertion) = assertion else {
        return Err(aad_error(
            401,
            "invalid_client",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
        return Err(aad_error(
            400,
            "invalid_request",
            50_027,
            "Invalid client_assertion_type.",
        ));
    }
    let creds = credentials(inner);
    let (header, claims) = decode_unverified(assertion).ok_or_else(|| {
        aad_error(
            400,
            "invalid_client",
            50_027,
            "JWT token is invalid or malformed.",
        )
    })?;
    let now = chrono::Utc::now().timestamp();
    let num = |k: &str| claims.get(k).and_then(Value::as_i64);
    let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or("");
    let in_time = num("exp").is_some_and(|e| now < e) && num("nbf").is_none_or(|n| n <= now + 60);
    // A federated token: issued by the workload's issuer, not by the app.
    if let Some((issuer, subject)) = &creds.federated
        && text("iss") != w.client_id
    {
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == EXCHANGE_AUDIENCE,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(EXCHANGE_AUDIENCE)),
            _ => false,
        };
        if text("iss") != issuer || text("sub") != subject || !aud_ok {
            return Err(aad_error(
                400,
                "invalid_client",
                70_021,
                &format!(
                    "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'.",
                    text("iss"),
                    text("sub"),
                    claims.get("aud").map(Value::to_string).unwrap_or_default()
                ),
            ));
        }
        if !in_time {
            return Err(out_of_time());
        }
        return Ok(());
    }
    verify_certificate_assertion(
        inner, &creds, w, tenant, assertion, &header, &claims, in_time,
    )
}

/// A certificate's client assertion, checked as the module doc says.
#[allow(clippy::too_many_arguments)]
fn verify_certificate_assertion(
    inner: &Inner,
    creds: &crate::Credentials,
    w: &World,
    tenant: &str,
    assertion: &str,
    header: &Value,
    claims: &Value,
    in_time: bool,
) -> Result<(), Response> {
    let (Some(cert_pem), Some(key_pem)) = (&creds.certificate_pem, &creds.public_key_pem) else {
        return Err(aad_error(
            401,
            "invalid_client",
            700_027,
            "Client assertion failed signature validation. No certificate is registered on the application.",
        ));
    };
    let der = pem::parse(cert_pem)
        .map(|p| p.contents().to_vec())
        .unwrap_or_default();
    let s256 = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der));
    let sha1 = URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der));
    let named = header.get("x5t#S256").and_then(Value::as_str) == Some(s256.as_str())
        || header.get("x5t").and_then(Value::as_str) == Some(sha1.as_str());
    if !named {
        return Err(aad_error(
            401,
            "invalid_client",
            700_027,
            "Client assertion failed signature validation. The key was not found (x5t#S256 / x5t names no certificate registered on the application).",
        ));
    }
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => jsonwebtoken::Algorithm::RS256,
        Some("PS256") => jsonwebtoken::Algorithm::PS256,
        _ => {
            return Err(aad_error(
                401,
                "invalid_client",
                700_027,
                "Client assertion failed signature validation. Unsupported algorithm.",
            ));
        }
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(key_pem.as_bytes()).map_err(|_| {
        aad_error(
            500,
            "server_error",
            50_000,
            "The registered key does not load.",
        )
    })?;
    let mut v = jsonwebtoken::Validation::new(alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    if jsonwebtoken::decode::<Value>(assertion, &key, &v).is_err() {
        return Err(aad_error(
            401,
            "invalid_client",
            700_027,
            "Client assertion failed signature validation.",
        ));
    }
    let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or("");
    let want_aud = format!("{}/{tenant}/oauth2/v2.0/token", inner.base_url);
    if text("aud") != want_aud
        && text("aud") != format!("{}/{}/oauth2/v2.0/token", inner.base_url, w.tenant_id)
    {
        return Err(aad_error(
            400,
            "invalid_client",
            700_016,
            &format!(
                "The audience claim of the client assertion {:?} is not the token endpoint.",
                text("aud")
            ),
        ));
    }
    if text("iss") != w.client_id || text("sub") != w.client_id {
        return Err(aad_error(
            400,
            "invalid_client",
            700_021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    if !in_time {
        return Err(out_of_time());
    }
    let jti = text("jti");
    if jti.is_empty()
        || !inner
            .assertions_seen
            .lock()
            .expect("jti lock")
            .insert(jti.to_owned())
    {
        return Err(aad_error(
            400,
            "invalid_client",
            700_025,
            "The client assertion has been replayed: its jti was used before.",
        ));
    }
    Ok(())
}

/// Entra's refusal of an assertion outside its `nbf`..`exp`.
fn out_of_time() -> Response {
    aad_error(
        400,
        "invalid_client",
        700_024,
        "Client assertion is not within its valid time range.",
    )
}

/// What the simulated Entra accepts now.
fn credentials(inner: &Inner) -> crate::Credentials {
    inner
        .config
        .read()
        .expect("config lock")
        .credentials
        .clone()
}

/// The header and claims of a compact JWS, not verified.
fn decode_unverified(jwt: &str) -> Option<(Value, Value)> {
    let mut parts = jwt.trim().split('.');
    let part = |p: Option<&str>| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p?.trim_end_matches('=')).ok()?).ok()
    };
    let header = part(parts.next())?;
    let claims = part(parts.next())?;
    parts.next()?;
    Some((header, claims))
}

/// IMDS (`imds`) or the App Service endpoint: a token for the host's managed identity.
pub(crate) fn managed_identity(
    inner: &Inner,
    imds: bool,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let creds = credentials(inner);
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let error = |status: u16, error: &str, description: &str| {
        respond(
            status,
            vec![],
            &json!({"error": error, "error_description": description}),
        )
    };
    if imds {
        if !creds.imds {
            return error(404, "not_found", "No managed identity endpoint here.");
        }
        if header("metadata") != Some("true") {
            return error(
                400,
                "invalid_request",
                "Required metadata header not specified",
            );
        }
    } else {
        match &creds.identity_header {
            None => return error(404, "not_found", "No managed identity endpoint here."),
            Some(h) if header("x-identity-header") != Some(h.as_str()) => {
                return error(
                    401,
                    "invalid_request",
                    "The X-IDENTITY-HEADER is missing or wrong.",
                );
            }
            Some(_) => {}
        }
    }
    if query.get("api-version").is_none_or(String::is_empty) {
        return error(
            400,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let resource = query.get("resource").map(String::as_str).unwrap_or("");
    let Some(audience) = audience_of(resource) else {
        return error(
            400,
            "invalid_resource",
            "AADSTS500011: The resource principal named was not found in the tenant.",
        );
    };
    // A user-assigned identity must be attached to the host.
    let client_id = query.get("client_id");
    if let Some(c) = client_id
        && !creds
            .user_assigned
            .iter()
            .any(|u| u.eq_ignore_ascii_case(c))
    {
        return error(400, "invalid_request", "Identity not found");
    }
    let w = inner.world.read().expect("world lock");
    let (token, lifetime) = new_token(inner, &w, audience);
    let now = chrono::Utc::now().timestamp();
    let expires_on = (now + i64::try_from(lifetime).unwrap_or(0)).to_string();
    let mi_client = client_id
        .cloned()
        .unwrap_or_else(|| "00000000-0000-0000-0000-00000000abcd".into());
    let body = if imds {
        json!({"access_token": token, "refresh_token": "", "expires_in": lifetime.to_string(), "expires_on": expires_on,
               "not_before": now.to_string(), "resource": resource, "token_type": "Bearer", "client_id": mi_client})
    } else {
        json!({"access_token": token, "expires_on": expires_on, "resource": resource, "token_type": "Bearer", "client_id": mi_client})
    };
    respond(200, vec![], &body)
}
