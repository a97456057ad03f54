//! Tokens: one cache per tenant's credential, in front of the credential kinds of [`credential`].
//!
//! The cache holds one token per (tenant, scope): a scan asks the token endpoint once per tenant and
//! audience while the token lives. It refreshes ahead of expiry (five minutes, or half the lifetime of a
//! shorter-lived token), one request at a time per key (callers that find it refreshing wait for that
//! refresh: single flight), and keeps using a token that is still valid when a refresh fails. The HTTP
//! policy drops a token that ARM or Graph rejected. Tokens, secrets and assertions are never logged.

mod assertion;
mod credential;

use super::AzureError;
use super::transport::Transport;
use crate::config::{AuthMethod, AuthSettings};
use credential::{Credential, CredentialError, Skipped};
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

/// After a failed refresh of a still-valid token, wait this long (at most) before trying again.
const RETRY_REFRESH: Duration = Duration::from_secs(30);

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
    expires_at: Instant,
}

type Key = (String, String);

/// Acquires and caches tokens for one tenant's credential.
pub struct TokenProvider {
    /// The same retry loop as every other Azure call.
    transport: Transport,
    authority_host: String,
    /// The credential, or with `auto` the candidates in order; or why none could be made.
    candidates: Result<Vec<Credential>, String>,
    skipped: Vec<Skipped>,
    /// The candidate that gave a token (fixed from then on).
    chosen: std::sync::OnceLock<usize>,
    cache: Mutex<HashMap<Key, Cached>>,
    /// One token request at a time per key: callers that find a refresh under way wait for it.
    flights: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// The last failed fetch per key, for the callers that waited on it.
    failures: Mutex<HashMap<Key, (Instant, String)>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; Entra sends a number, some endpoints a string (IMDS, docs/azure-behaviour.md §6b).
    #[serde(default, deserialize_with = "lifetime")]
    expires_in: Option<u64>,
    /// Epoch seconds, as a number or a string: what the App Service endpoint sends instead of
    /// `expires_in` (docs/azure-behaviour.md §6b).
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

impl TokenResponse {
    /// The lifetime in seconds: `expires_in`, else `expires_on` from now, else Entra's usual hour.
    fn lifetime(&self) -> u64 {
        self.expires_in
            .or_else(|| {
                let at = epoch_seconds(self.expires_on.as_ref()?)?;
                let left = at.checked_sub(chrono::Utc::now().timestamp()).unwrap_or(0);
                Some(u64::try_from(left).unwrap_or(0))
            })
            .unwrap_or(3599)
            .min(MAX_LIFETIME_SECS)
    }
}

/// Epoch seconds as a JSON number or a string of digits.
fn epoch_seconds(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The longest a token is cached, whatever `expires_in` says (Entra's tokens live about an hour,
/// managed-identity tokens up to a day).
const MAX_LIFETIME_SECS: u64 = 86_400;
/// How long a token whose expiry is unreadable (or already past) is kept.
const UNKNOWN_LIFETIME_SECS: u64 = 60;

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
        .map(|t| t.lifetime())
}

impl TokenProvider {
    /// A provider for the credential `settings` describe, requesting from `authority_host`.
    pub fn new(transport: Transport, authority_host: &str, settings: &AuthSettings) -> Self {
        let (candidates, skipped) = match Credential::candidates(settings) {
            Ok((c, s)) => (Ok(c), s),
            Err(e) => (Err(e), Vec::new()),
        };
        Self {
            transport,
            authority_host: authority_host.trim_end_matches('/').to_owned(),
            candidates,
            skipped,
            chosen: std::sync::OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The method that gave tokens so far (`None` before the first token).
    pub fn chosen_method(&self) -> Option<AuthMethod> {
        let i = *self.chosen.get()?;
        self.candidates
            .as_ref()
            .ok()?
            .get(i)
            .map(Credential::method)
    }

    /// A cached token that has not expired (it may be due for refresh).
    fn valid(&self, key: &Key) -> Option<AccessToken> {
        let cache = self.cache.lock();
        cache
            .get(key)
            .filter(|c| Instant::now() < c.expires_at)
            .map(|c| c.token.clone())
    }

    fn cached(&self, key: &Key) -> Option<AccessToken> {
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

    /// A valid token for `scope` in `tenant`, from the cache or the credential.
    pub async fn token(&self, tenant: &str, scope: &str) -> Result<AccessToken, AzureError> {
        let key = (tenant.to_owned(), scope.to_owned());
        if let Some(t) = self.cached(&key) {
            return Ok(t);
        }
        let flight = self.flights.lock().entry(key.clone()).or_default().clone();
        // A refresh is under way and the token we have is still valid: use it meanwhile.
        let _refreshing = match flight.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some(t) = self.valid(&key) {
                    return Ok(t);
                }
                let waited_from = Instant::now();
                let guard = flight.lock().await;
                // The flight we waited for failed: its error is ours too, rather than another
                // round of requests (and retries) per waiting caller.
                if let Some((at, e)) = self.failures.lock().get(&key)
                    && *at >= waited_from
                {
                    return Err(AzureError::Auth(e.clone()));
                }
                guard
            }
        };
        if let Some(t) = self.cached(&key) {
            return Ok(t);
        }
        match self.fetch(tenant, scope).await {
            Ok((token, expires_in)) => {
                self.failures.lock().remove(&key);
                // A token said to expire at once (an unreadable expiry) is still kept a minute, so that
                // not every call asks for a new one (a 401 drops it sooner if it is refused).
                let secs = if expires_in == 0 {
                    UNKNOWN_LIFETIME_SECS
                } else {
                    expires_in.min(MAX_LIFETIME_SECS)
                };
                let lifetime = Duration::from_secs(secs);
                // Short-lived tokens refresh at half-life rather than never being cached.
                let margin = REFRESH_MARGIN.min(lifetime / 2);
                let now = Instant::now();
                self.cache.lock().insert(
                    key,
                    Cached {
                        token: token.clone(),
                        refresh_at: now.checked_add(lifetime - margin).unwrap_or(now),
                        expires_at: now.checked_add(lifetime).unwrap_or(now),
                    },
                );
                Ok(token)
            }
            Err(e) => {
                // A refresh ahead of expiry failed: the token we have still works until it expires.
                let mut cache = self.cache.lock();
                let now = Instant::now();
                match cache.get_mut(&key).filter(|c| now < c.expires_at) {
                    Some(c) => {
                        let left = c.expires_at - now;
                        c.refresh_at = now + RETRY_REFRESH.min(left / 2);
                        tracing::warn!(error = %e, seconds_left = left.as_secs(), "token refresh failed; the current token is used until it expires");
                        Ok(c.token.clone())
                    }
                    None => {
                        drop(cache);
                        self.failures
                            .lock()
                            .insert(key, (Instant::now(), e.to_string()));
                        Err(e)
                    }
                }
            }
        }
    }

    /// A token from the chosen credential, or (the first time) from the first candidate that has one.
    async fn fetch(&self, tenant: &str, scope: &str) -> Result<(AccessToken, u64), AzureError> {
        let candidates = self
            .candidates
            .as_ref()
            .map_err(|e| AzureError::Auth(format!("credential: {e}")))?;

        if let Some(&i) = self.chosen.get() {
            return candidates[i]
                .request(&self.transport, &self.authority_host, tenant, scope)
                .await
                .map_err(|e| match e {
                    CredentialError::Unavailable(why) => AzureError::Auth(why),
                    CredentialError::Failed(e) => e,
                });
        }
        let chain = candidates.len() > 1;
        // Each skipped credential with its place in the chain, so the log names only those before the
        // one chosen.
        let mut skipped: Vec<(u8, String)> = self
            .skipped
            .iter()
            .map(|s| {
                (
                    credential::rank(s.method),
                    format!("{}: {}", s.method.name(), s.why),
                )
            })
            .collect();
        let before = |skipped: &[(u8, String)], rank: u8| {
            let mut earlier: Vec<&(u8, String)> =
                skipped.iter().filter(|(r, _)| *r < rank).collect();
            earlier.sort_by_key(|(r, _)| *r);
            earlier
                .iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        for (i, c) in candidates.iter().enumerate() {
            let rank = credential::rank(c.method());
            if chain
                && let Credential::ManagedIdentity { source, .. } = c
                && let Err(why) = credential::probe_managed_identity(&self.transport, source).await
            {
                skipped.push((rank, format!("{}: {why}", c.method().name())));
                continue;
            }
            match c
                .request(&self.transport, &self.authority_host, tenant, scope)
                .await
            {
                Ok(t) => {
                    if self.chosen.set(i).is_ok() {
                        let skipped = before(&skipped, rank);
                        if skipped.is_empty() {
                            tracing::info!(
                                tenant,
                                credential = c.method().name(),
                                "authenticating with {}",
                                c.method().name()
                            );
                        } else {
                            tracing::info!(tenant, credential = c.method().name(), skipped = %skipped, "authenticating with {}", c.method().name());
                        }
                    }
                    return Ok(t);
                }
                Err(CredentialError::Unavailable(why)) => {
                    skipped.push((rank, format!("{}: {why}", c.method().name())));
                }
                Err(CredentialError::Failed(e)) => return Err(e),
            }
        }
        Err(AzureError::Auth(format!(
            "no credential could be used (tried in DefaultAzureCredential's order): {}",
            before(&skipped, u8::MAX)
        )))
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
