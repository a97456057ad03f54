//! Token credentials. This version speaks the client-credentials grant with a client secret
//! (`POST {authority}/{tenant}/oauth2/v2.0/token`, form-encoded, one scope per request: CC doc,
//! docs/azure-behaviour.md §6a), caches one token per (tenant, scope) until shortly before `expires_in`, and is
//! told by the HTTP policy to drop a token that ARM or Graph rejected.
//!
//! Written over reqwest rather than with `azure_identity`: that crate rejects non-https authority hosts
//! and hard-codes the IMDS address, so it cannot be pointed at the simulator (docs/azure-behaviour.md §8).

use super::transport::{Handled, Transport};
use super::{Api, AzureError};
use crate::config::Secret;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An access token (also never printed).
#[derive(Clone)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// Refresh this long before expiry; Microsoft's SDKs use five minutes (RUST `azure_identity` cache).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

/// Acquires and caches tokens for the configured application.
pub struct TokenProvider {
    /// The same retry loop as every other Azure call.
    transport: Transport,
    authority_host: String,
    client_id: String,
    secret: Secret,
    cache: Mutex<HashMap<(String, String), Cached>>,
    /// One token request at a time per provider, so a burst of callers with a cold cache makes one request.
    fetch: tokio::sync::Mutex<()>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; Entra sends a number, some endpoints a string (IMDS, docs/azure-behaviour.md §6b).
    #[serde(default, deserialize_with = "lifetime")]
    expires_in: Option<u64>,
}

/// The longest a token is cached, whatever `expires_in` says (Entra's tokens live about an hour,
/// managed-identity tokens up to a day).
const MAX_LIFETIME_SECS: u64 = 86_400;

#[derive(serde::Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    correlation_id: String,
}

/// `expires_in` as a number or a string of one; negative reads as 0 (expired), larger than a day as a day,
/// and anything that is not a number as absent: a token answer never makes the cache arithmetic overflow.
fn lifetime<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    let secs = match v {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    Ok(secs.filter(|s| !s.is_nan()).map(|s| {
        if s <= 0.0 {
            0
        } else if s >= MAX_LIFETIME_SECS as f64 {
            MAX_LIFETIME_SECS
        } else {
            s as u64
        }
    }))
}

use serde::Deserialize;

/// A token answer's lifetime as the cache would take it, or `None` when the answer does not decode
/// (for the fuzz targets).
#[cfg(test)]
pub(crate) fn lifetime_for_fuzz(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<TokenResponse>(body)
        .ok()
        .map(|t| t.expires_in.unwrap_or(3599))
}

impl TokenProvider {
    pub fn new(
        transport: Transport,
        authority_host: &str,
        client_id: String,
        secret: Secret,
    ) -> Self {
        Self {
            transport,
            authority_host: authority_host.trim_end_matches('/').to_owned(),
            client_id,
            secret,
            cache: Mutex::new(HashMap::new()),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<AccessToken> {
        let cache = self.cache.lock();
        cache
            .get(key)
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// Drops a cached token, so the next call fetches a new one.
    pub fn invalidate(&self, tenant: &str, scope: &str) {
        self.cache
            .lock()
            .remove(&(tenant.to_owned(), scope.to_owned()));
    }

    /// A valid token for `scope` in `tenant`, from the cache or the token endpoint.
    pub async fn token(&self, tenant: &str, scope: &str) -> Result<AccessToken, AzureError> {
        let key = (tenant.to_owned(), scope.to_owned());
        if let Some(t) = self.cached(&key) {
            return Ok(t);
        }
        let _guard = self.fetch.lock().await;
        if let Some(t) = self.cached(&key) {
            return Ok(t);
        }
        let (token, expires_in) = self.request(tenant, scope).await?;
        let lifetime = Duration::from_secs(expires_in.min(MAX_LIFETIME_SECS));
        // Short-lived tokens refresh at half-life rather than never being cached.
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let now = Instant::now();
        self.cache.lock().insert(
            key,
            Cached {
                token: token.clone(),
                refresh_at: now.checked_add(lifetime - margin).unwrap_or(now),
            },
        );
        Ok(token)
    }

    async fn request(&self, tenant: &str, scope: &str) -> Result<(AccessToken, u64), AzureError> {
        let url = format!("{}/{}/oauth2/v2.0/token", self.authority_host, tenant);
        let form = [
            ("client_id", self.client_id.as_str()),
            ("scope", scope),
            ("client_secret", self.secret.expose()),
            ("grant_type", "client_credentials"),
        ];
        let answer = self
            .transport
            .run(
                Api::Token,
                || async { Ok(self.transport.client().post(&url).form(&form)) },
                |reply| {
                    if reply.is_success() {
                        return match serde_json::from_slice::<TokenResponse>(&reply.body) {
                            Ok(t) if !t.access_token.is_empty() => Handled::Done(Ok((
                                AccessToken(t.access_token.into()),
                                t.expires_in.unwrap_or(3599),
                            ))),
                            Ok(_) => Handled::Retry("token response without access_token".into()),
                            Err(e) => Handled::Retry(format!(
                                "token response does not decode: {}",
                                super::shorten(&e.to_string())
                            )),
                        };
                    }
                    Handled::Done(Err(refusal(tenant, &reply)))
                },
            )
            .await?;
        if answer.is_err() {
            self.transport
                .counters()
                .failure(Api::Token, super::ErrorKind::Denied);
        }
        answer
    }
}

/// A token refusal (AADSTS errors) in one clear line with code, description and correlation id; the
/// form we sent (with the secret) is never echoed, and the service's text is bounded and redacted.
fn refusal(tenant: &str, reply: &super::Reply) -> AzureError {
    let e: TokenError = serde_json::from_slice(&reply.body).unwrap_or_default();
    let first_line = super::shorten(e.error_description.lines().next().unwrap_or("").trim());
    let code = super::shorten(&e.error);
    let correlation = super::shorten(&e.correlation_id);
    AzureError::Auth(format!(
        "token request for tenant {tenant} failed: HTTP {} {}{}{}",
        reply.status,
        if code.is_empty() {
            "(no error code)"
        } else {
            &code
        },
        if first_line.is_empty() {
            String::new()
        } else {
            format!(": {first_line}")
        },
        if correlation.is_empty() {
            String::new()
        } else {
            format!(" (correlation id {correlation})")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print() {
        let t = AccessToken("eyJ0eXAi".into());
        assert!(!format!("{t:?}").contains("eyJ0"));
    }

    #[test]
    fn expires_in_may_be_a_string() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":"3599"}"#).expect("decodes");
        assert_eq!(t.expires_in, Some(3599));
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":3599,"ext_expires_in":3599}"#)
                .expect("decodes");
        assert_eq!(t.expires_in, Some(3599));
    }

    #[test]
    fn absurd_lifetimes_are_clamped_not_overflowed() {
        for (v, want) in [
            ("18446744073709551615", Some(MAX_LIFETIME_SECS)),
            ("\"99999999999999999999\"", Some(MAX_LIFETIME_SECS)),
            ("1e30", Some(MAX_LIFETIME_SECS)),
            ("-1", Some(0)),
            ("\"-1\"", Some(0)),
            ("0", Some(0)),
            ("3599.9", Some(3599)),
            ("\"soon\"", None),
            ("null", None),
            ("[1]", None),
        ] {
            let t: TokenResponse =
                serde_json::from_str(&format!(r#"{{"access_token":"a","expires_in":{v}}}"#))
                    .expect(v);
            assert_eq!(t.expires_in, want, "{v}");
        }
    }
}
