//! The client Graph, Resource Graph and ARM calls go through: the [`Transport`]'s retry loop with a
//! bearer token for the call's audience on every attempt, a fresh client request id, and one token
//! refresh on a 401 that blames the token.

use super::auth::TokenProvider;
use super::transport::{Handled, Transport};
use super::{Api, AzureError, Counters, Reply};
use std::sync::Arc;

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

/// The client every Graph, Resource Graph and ARM call goes through.
#[derive(Clone)]
pub struct AzureHttp {
    transport: Transport,
    tokens: Arc<TokenProvider>,
    graph_scope: String,
    arm_scope: String,
}

impl AzureHttp {
    pub fn new(
        transport: Transport,
        tokens: Arc<TokenProvider>,
        graph_scope: String,
        arm_scope: String,
    ) -> Self {
        Self {
            transport,
            tokens,
            graph_scope,
            arm_scope,
        }
    }

    pub fn counters(&self) -> &Arc<Counters> {
        self.transport.counters()
    }

    pub fn policy(&self) -> &super::transport::RetryPolicy {
        self.transport.policy()
    }

    fn scope(&self, api: Api) -> &str {
        match api {
            Api::Graph => &self.graph_scope,
            _ => &self.arm_scope,
        }
    }

    /// Sends `call` under the transport's policy with a bearer token and hands each final reply to
    /// `handle`.
    pub async fn execute<T>(
        &self,
        call: &Call<'_>,
        mut handle: impl FnMut(Reply) -> Handled<T>,
    ) -> Result<T, AzureError> {
        let api = call.api;
        let scope = self.scope(api);
        let mut refreshed = false;
        self.transport
            .run(
                api,
                || async {
                    let token = self.tokens.token(call.tenant, scope).await?;
                    let mut req = self
                        .transport
                        .client()
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
                    Ok(req)
                },
                |reply| {
                    if reply.status == 401 && !refreshed && token_was_rejected(&reply) {
                        // Refreshed once on a 401 that blames the token (expired, revoked); a second
                        // 401 goes to the caller.
                        refreshed = true;
                        self.tokens.invalidate(call.tenant, scope);
                        return Handled::Again;
                    }
                    handle(reply)
                },
            )
            .await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(headers: &[(&'static str, &'static str)]) -> Reply {
        Reply::for_test(429, headers)
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
