//! One token request per credential kind, each as Microsoft documents its protocol
//! (docs/azure-behaviour.md §6):
//!
//! - client secret, certificate and workload identity: the client-credentials grant at
//!   `{authority}/{tenant}/oauth2/v2.0/token`, with `client_secret`, or a `client_assertion` (a JWT we
//!   sign, or the federated token file's contents, re-read for every request since the file rotates);
//! - managed identity: `GET {imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//!   with `Metadata: true` (404 and 410 retried: the endpoint is updating), or on App Service,
//!   Functions and Container Apps `GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=…` with
//!   `X-IDENTITY-HEADER`; a user-assigned identity by `client_id`, `object_id` or `msi_res_id` /
//!   `mi_res_id`;
//! - Azure CLI: `az account get-access-token --resource … --tenant … --output json`;
//! - `auto`: the first of those the environment offers, in DefaultAzureCredential's order.
//!
//! Written over the project's transport rather than with `azure_identity`: that crate rejects
//! non-https authority hosts, hard-codes the IMDS address and needs OpenSSL for certificates, so it could
//! be neither tested against the simulator nor built without OpenSSL (docs/azure-behaviour.md §8).

use super::assertion::Signer;
use super::{AccessToken, TokenResponse, refusal};
use crate::azure::transport::{Handled, Transport};
use crate::azure::{Api, AzureError, shorten};
use crate::config::{AuthMethod, AuthSettings, ManagedIdentityId, ManagedIdentitySource, Secret};
use std::path::PathBuf;
use std::time::Duration;

/// The client-assertion type of the certificate and workload identity flows (CC).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long `auto` waits for IMDS to answer its probe.
const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long `az` may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// How a credential proves itself to the token endpoint.
pub(super) enum ClientProof {
    Secret(Secret),
    Certificate(Box<Signer>),
    FederatedTokenFile(PathBuf),
}

/// A credential of one kind, ready to request tokens.
pub(super) enum Credential {
    App {
        method: AuthMethod,
        client_id: String,
        proof: ClientProof,
    },
    ManagedIdentity {
        source: ManagedIdentitySource,
        id: ManagedIdentityId,
    },
    AzureCli,
}

/// A method's place in `auto`'s chain (DefaultAzureCredential's order).
pub(super) fn rank(method: AuthMethod) -> u8 {
    match method {
        AuthMethod::ClientSecret | AuthMethod::ClientCertificate => 0,
        AuthMethod::WorkloadIdentity => 1,
        AuthMethod::ManagedIdentity => 2,
        AuthMethod::AzureCli => 3,
        AuthMethod::Auto => 4,
    }
}

/// A credential `auto` passed over, and why.
pub(super) struct Skipped {
    pub method: AuthMethod,
    pub why: String,
}

impl Credential {
    /// The credential `settings` name, or for `auto` the chain of candidates in
    /// DefaultAzureCredential's order (environment secret or certificate → workload identity → managed
    /// identity → Azure CLI) with the reason each missing one was skipped.
    pub(super) fn candidates(
        settings: &AuthSettings,
    ) -> Result<(Vec<Credential>, Vec<Skipped>), String> {
        let app = |method, proof| {
            settings.client_id.clone().map(|client_id| Credential::App {
                method,
                client_id,
                proof,
            })
        };
        let secret = || {
            settings
                .client_secret
                .clone()
                .and_then(|s| app(AuthMethod::ClientSecret, ClientProof::Secret(s)))
        };
        let certificate = || -> Result<Option<Credential>, String> {
            let Some(c) = &settings.certificate else {
                return Ok(None);
            };
            let signer = Signer::new(c, settings.send_certificate_chain)?;
            Ok(app(
                AuthMethod::ClientCertificate,
                ClientProof::Certificate(Box::new(signer)),
            ))
        };
        let workload = || {
            settings.federated_token_file.clone().and_then(|f| {
                app(
                    AuthMethod::WorkloadIdentity,
                    ClientProof::FederatedTokenFile(f),
                )
            })
        };
        let managed = || Credential::ManagedIdentity {
            source: settings.managed_identity.clone(),
            id: settings.managed_identity_id.clone(),
        };
        let missing = |what: &str| format!("{what} (configuration checked at start-up)");
        let one = |c: Option<Credential>, what: &str| {
            c.map(|c| (vec![c], Vec::new()))
                .ok_or_else(|| missing(what))
        };
        match settings.method {
            AuthMethod::ClientSecret => one(secret(), "no client id or client secret"),
            AuthMethod::ClientCertificate => one(certificate()?, "no client id or certificate"),
            AuthMethod::WorkloadIdentity => one(workload(), "no client id or federated token file"),
            AuthMethod::ManagedIdentity => Ok((vec![managed()], Vec::new())),
            AuthMethod::AzureCli => Ok((vec![Credential::AzureCli], Vec::new())),
            AuthMethod::Auto => {
                let mut chain = Vec::new();
                let mut skipped = Vec::new();
                let no_client = settings.client_id.is_none();
                match (secret(), certificate()?) {
                    (Some(s), _) => chain.push(s),
                    (None, Some(c)) => chain.push(c),
                    (None, None) => skipped.push(Skipped {
                        method: AuthMethod::ClientSecret,
                        why: if no_client {
                            "no client id (AZURE_CLIENT_ID or auth.client_id)".into()
                        } else {
                            "neither a client secret nor a certificate is configured (AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH)".into()
                        },
                    }),
                }
                match workload() {
                    Some(w) => chain.push(w),
                    None => skipped.push(Skipped {
                        method: AuthMethod::WorkloadIdentity,
                        why: if settings.federated_token_file.is_none() {
                            "AZURE_FEDERATED_TOKEN_FILE is not set".into()
                        } else {
                            "no client id (AZURE_CLIENT_ID)".into()
                        },
                    }),
                }
                chain.push(managed());
                chain.push(Credential::AzureCli);
                Ok((chain, skipped))
            }
        }
    }

    pub(super) fn method(&self) -> AuthMethod {
        match self {
            Self::App { method, .. } => *method,
            Self::ManagedIdentity { .. } => AuthMethod::ManagedIdentity,
            Self::AzureCli => AuthMethod::AzureCli,
        }
    }

    /// Requests a token for `scope` in `tenant`: the token and its lifetime in seconds.
    pub(super) async fn request(
        &self,
        transport: &Transport,
        authority_host: &str,
        tenant: &str,
        scope: &str,
    ) -> Result<(AccessToken, u64), CredentialError> {
        match self {
            Self::App {
                client_id, proof, ..
            } => {
                let url = format!("{authority_host}/{tenant}/oauth2/v2.0/token");
                let mut form: Vec<(&str, String)> = vec![
                    ("client_id", client_id.clone()),
                    ("scope", scope.to_owned()),
                    ("grant_type", "client_credentials".to_owned()),
                ];
                match proof {
                    ClientProof::Secret(s) => form.push(("client_secret", s.expose().to_owned())),
                    ClientProof::Certificate(signer) => {
                        // A new assertion (a new jti) for every request, retries included.
                        form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                        form.push((
                            "client_assertion",
                            signer
                                .assertion(client_id, &url)
                                .map_err(|e| CredentialError::Failed(AzureError::Auth(e)))?,
                        ));
                    }
                    ClientProof::FederatedTokenFile(path) => {
                        // Re-read every time: the kubelet rotates the file.
                        let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                            CredentialError::Failed(AzureError::Auth(format!(
                                "workload identity: cannot read the federated token file {}: {e}",
                                path.display()
                            )))
                        })?;
                        form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                        form.push(("client_assertion", token.trim().to_owned()));
                    }
                }
                let secret = match proof {
                    ClientProof::Secret(s) => Some(s.expose()),
                    _ => None,
                };
                token_endpoint(transport, &url, &form, tenant)
                    .await
                    .map_err(|e| CredentialError::Failed(scrub(e, secret)))
            }
            Self::ManagedIdentity { source, id } => {
                let secret = match source {
                    ManagedIdentitySource::AppService { header, .. } => Some(header.expose()),
                    ManagedIdentitySource::Imds(_) => None,
                };
                // IMDS is never reached through a proxy (MI-VMTOKEN): its own client, without one.
                let direct = direct_transport(transport);
                let (token, lifetime) = managed_identity(&direct, source, id, scope)
                    .await
                    .map_err(|e| match e {
                        CredentialError::Failed(e) => CredentialError::Failed(scrub(e, secret)),
                        CredentialError::Unavailable(w) => {
                            CredentialError::Unavailable(scrub_text(w, secret))
                        }
                    })?;
                // A managed identity's token is for the tenant the identity lives in, whatever tenant
                // was asked for: refuse it for another (its data would be recorded as this tenant's).
                match token_tenant(token.as_str()) {
                    Some(tid) if is_guid(tenant) && !tid.eq_ignore_ascii_case(tenant) => {
                        Err(CredentialError::Failed(AzureError::Auth(format!(
                            "managed identity: its token is for tenant {tid}, not {tenant}: a managed identity can audit only its own tenant (give this tenant a [tenants.auth] of its own)"
                        ))))
                    }
                    _ => Ok((token, lifetime)),
                }
            }
            Self::AzureCli => azure_cli(tenant, scope).await,
        }
    }
}

/// Why a credential gave no token: it is not there to be used (`auto` moves on), or it failed.
pub(super) enum CredentialError {
    Unavailable(String),
    Failed(AzureError),
}

/// `transport` with a client that ignores proxy settings (for IMDS and the App Service endpoint).
fn direct_transport(transport: &Transport) -> Transport {
    static DIRECT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = DIRECT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_else(|_| transport.client().clone())
        })
        .clone();
    Transport::new(
        client,
        transport.policy().clone(),
        transport.counters().clone(),
    )
}

/// The tenant (`tid`) a JWT access token was issued in; `None` when it is not a JWT (or says none).
fn token_tenant(token: &str) -> Option<String> {
    use base64::Engine;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("tid")?.as_str().map(str::to_owned)
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// `text` without `secret` (an error page that echoed it back).
fn scrub_text(text: String, secret: Option<&str>) -> String {
    match secret.filter(|s| s.len() >= 4) {
        Some(s) if text.contains(s) => text.replace(s, "<redacted>"),
        _ => text,
    }
}

/// `e` without `secret` in any of its texts.
fn scrub(e: AzureError, secret: Option<&str>) -> AzureError {
    match e {
        AzureError::Auth(t) => AzureError::Auth(scrub_text(t, secret)),
        AzureError::Exhausted {
            api,
            attempts,
            last,
            kind,
        } => AzureError::Exhausted {
            api,
            attempts,
            last: scrub_text(last, secret),
            kind,
        },
        AzureError::Status {
            api,
            status,
            code,
            message,
        } => AzureError::Status {
            api,
            status,
            code: scrub_text(code, secret),
            message: scrub_text(message, secret),
        },
        other => other,
    }
}

/// `resource` of the managed-identity and CLI requests: the scope without `/.default`.
fn resource_of(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

/// The client-credentials grant: one form POST, the answer read as a token or an AADSTS refusal.
async fn token_endpoint(
    transport: &Transport,
    url: &str,
    form: &[(&str, String)],
    tenant: &str,
) -> Result<(AccessToken, u64), AzureError> {
    let answer = transport
        .run(
            Api::Token,
            || async { Ok(transport.client().post(url).form(form)) },
            |reply| {
                if reply.is_success() {
                    return read_token(&reply.body);
                }
                Handled::Done(Err(refusal(tenant, &reply)))
            },
        )
        .await?;
    if answer.is_err() {
        transport
            .counters()
            .failure(Api::Token, crate::azure::ErrorKind::Denied);
    }
    answer
}

/// A token answer: the token and its lifetime (`expires_in`, else `expires_on` from now).
fn read_token(body: &[u8]) -> Handled<Result<(AccessToken, u64), AzureError>> {
    match serde_json::from_slice::<TokenResponse>(body) {
        Ok(t) if !t.access_token.is_empty() => {
            let lifetime = t.lifetime();
            Handled::Done(Ok((AccessToken(t.access_token.into()), lifetime)))
        }
        Ok(_) => Handled::Retry("token response without access_token".into()),
        Err(e) => Handled::Retry(format!(
            "token response does not decode: {}",
            shorten(&e.to_string())
        )),
    }
}

/// A managed identity's token from IMDS or the App Service endpoint. A connection that fails outright
/// means there is no such endpoint here (unavailable, for `auto`).
async fn managed_identity(
    transport: &Transport,
    source: &ManagedIdentitySource,
    id: &ManagedIdentityId,
    scope: &str,
) -> Result<(AccessToken, u64), CredentialError> {
    let resource = resource_of(scope);
    let (url, header, value, what) = match source {
        ManagedIdentitySource::Imds(base) => {
            let mut u = url::Url::parse(&format!("{base}/metadata/identity/oauth2/token"))
                .map_err(|e| {
                    CredentialError::Failed(AzureError::Auth(format!("IMDS address: {e}")))
                })?;
            u.query_pairs_mut()
                .append_pair("api-version", "2018-02-01")
                .append_pair("resource", resource);
            add_identity(&mut u, id, "msi_res_id");
            (u, "Metadata", "true".to_owned(), "IMDS")
        }
        ManagedIdentitySource::AppService { endpoint, header } => {
            let mut u = url::Url::parse(endpoint).map_err(|e| {
                CredentialError::Failed(AzureError::Auth(format!("IDENTITY_ENDPOINT: {e}")))
            })?;
            u.query_pairs_mut()
                .append_pair("api-version", "2019-08-01")
                .append_pair("resource", resource);
            add_identity(&mut u, id, "mi_res_id");
            (
                u,
                "X-IDENTITY-HEADER",
                header.expose().to_owned(),
                "the App Service identity endpoint",
            )
        }
    };
    let answer = transport
        .run(
            Api::Token,
            || async {
                Ok(transport
                    .client()
                    .get(url.clone())
                    .header(header, value.as_str()))
            },
            |reply| {
                if reply.is_success() {
                    return read_token(&reply.body);
                }
                // IMDS answers 404 and 410 while it is being updated (MI-VMTOKEN): try again.
                if matches!(source, ManagedIdentitySource::Imds(_))
                    && matches!(reply.status, 404 | 410)
                {
                    return Handled::Retry(format!("{what} answered {} (updating)", reply.status));
                }
                Handled::Done(Err(mi_refusal(what, &reply)))
            },
        )
        .await;
    match answer {
        Ok(Ok(t)) => Ok(t),
        // IMDS's 400: this host has no such identity (none at all, or not the one named); the SDKs
        // treat it as the credential being unavailable, so `auto` goes on to the Azure CLI.
        Ok(Err(e))
            if matches!(source, ManagedIdentitySource::Imds(_))
                && e.to_string().contains(" answered HTTP 400 ") =>
        {
            Err(CredentialError::Unavailable(e.to_string()))
        }
        Ok(Err(e)) | Err(e) => Err(CredentialError::Failed(e)),
    }
}

/// Whether anything answers at the managed-identity endpoint of `source`: for `auto`, one request
/// without retries and with a short timeout, as DefaultAzureCredential probes IMDS off Azure. Any HTTP
/// answer (even an error) means the endpoint is there.
pub(super) async fn probe_managed_identity(
    transport: &Transport,
    source: &ManagedIdentitySource,
) -> Result<(), String> {
    let ManagedIdentitySource::Imds(base) = source else {
        // IDENTITY_ENDPOINT and IDENTITY_HEADER are set: the platform put them there.
        return Ok(());
    };
    let url = format!("{base}/metadata/identity/oauth2/token");
    match transport
        .client()
        .get(&url)
        .timeout(IMDS_PROBE_TIMEOUT)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "no managed identity endpoint answered at {base} within {} s ({})",
            IMDS_PROBE_TIMEOUT.as_secs(),
            if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "no answer"
            }
        )),
    }
}

fn add_identity(u: &mut url::Url, id: &ManagedIdentityId, resource_param: &str) {
    match id {
        ManagedIdentityId::System => {}
        ManagedIdentityId::ClientId(c) => {
            u.query_pairs_mut().append_pair("client_id", c);
        }
        ManagedIdentityId::ObjectId(o) => {
            u.query_pairs_mut().append_pair("object_id", o);
        }
        ManagedIdentityId::ResourceId(r) => {
            u.query_pairs_mut().append_pair(resource_param, r);
        }
    }
}

/// A managed-identity endpoint's refusal in one line: status, `error` and its description.
fn mi_refusal(what: &str, reply: &crate::azure::Reply) -> AzureError {
    #[derive(serde::Deserialize, Default)]
    struct Refusal {
        #[serde(default)]
        error: serde_json::Value,
        #[serde(default)]
        error_description: String,
        #[serde(default)]
        message: String,
    }
    let r: Refusal = serde_json::from_slice(&reply.body).unwrap_or_default();
    let code = match &r.error {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    let text = if r.error_description.is_empty() {
        r.message
    } else {
        r.error_description
    };
    AzureError::Auth(format!(
        "managed identity: {what} answered HTTP {} {}{}",
        reply.status,
        shorten(&code),
        if text.is_empty() {
            String::new()
        } else {
            format!(": {}", shorten(text.lines().next().unwrap_or("")))
        }
    ))
}

/// `az account get-access-token`: the token, and its lifetime from `expires_on` (epoch seconds; newer
/// CLIs) or `expiresOn` (local time; older ones).
async fn azure_cli(tenant: &str, scope: &str) -> Result<(AccessToken, u64), CredentialError> {
    let mut cmd = tokio::process::Command::new("az");
    cmd.args([
        "account",
        "get-access-token",
        "--output",
        "json",
        "--resource",
        resource_of(scope),
        "--tenant",
        tenant,
    ])
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = match tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await {
        Err(_) => {
            return Err(CredentialError::Failed(AzureError::Auth(format!(
                "Azure CLI: `az account get-access-token` did not finish within {} s",
                CLI_TIMEOUT.as_secs()
            ))));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialError::Unavailable(
                "Azure CLI: `az` is not installed (not found on PATH); install it and run `az login`, or choose another [auth] method".into(),
            ));
        }
        Ok(Err(e)) => {
            return Err(CredentialError::Unavailable(format!(
                "Azure CLI: cannot run `az`: {e}"
            )));
        }
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let not_logged_in = stderr.contains("az login") || stderr.contains("not logged in");
        let msg = if not_logged_in {
            format!(
                "Azure CLI: not logged in for tenant {tenant}: run `az login --tenant {tenant}`"
            )
        } else {
            format!(
                "Azure CLI: `az account get-access-token` failed ({}): {}",
                out.status,
                shorten(first)
            )
        };
        // Not logged in counts as not there, so `auto` says so rather than failing the scan on it.
        return Err(if not_logged_in {
            CredentialError::Unavailable(msg)
        } else {
            CredentialError::Failed(AzureError::Auth(msg))
        });
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct CliToken {
        access_token: String,
        #[serde(default, rename = "expires_on")]
        expires_on: Option<serde_json::Value>,
        #[serde(default, rename = "expiresOn")]
        expires_on_text: Option<String>,
    }
    let t: CliToken = serde_json::from_slice(&out.stdout).map_err(|e| {
        CredentialError::Failed(AzureError::Auth(format!(
            "Azure CLI: its answer does not decode: {}",
            shorten(&e.to_string())
        )))
    })?;
    let now = chrono::Utc::now();
    let from_epoch = t.expires_on.as_ref().and_then(super::epoch_seconds);
    let from_text = t
        .expires_on_text
        .and_then(|s| chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f").ok())
        .and_then(|n| n.and_local_timezone(chrono::Local).earliest())
        .map(|d| d.timestamp());
    let lifetime = from_epoch.or(from_text).map_or(0, |at| {
        u64::try_from(at.checked_sub(now.timestamp()).unwrap_or(0)).unwrap_or(0)
    });
    if t.access_token.is_empty() {
        return Err(CredentialError::Failed(AzureError::Auth(
            "Azure CLI: its answer holds no accessToken".into(),
        )));
    }
    Ok((AccessToken(t.access_token.into()), lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn a_tokens_tenant_is_read_from_its_claims() {
        let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!(
            "{}.{}.sig",
            b(r#"{"alg":"RS256"}"#),
            b(r#"{"tid":"72f988bf-86f1-41af-91ab-2d7cd011db47","aud":"x"}"#)
        );
        assert_eq!(
            token_tenant(&jwt).as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        assert_eq!(token_tenant("sim.opaque"), None);
        assert_eq!(token_tenant("a.%%%.c"), None);
    }

    #[test]
    fn an_echoed_secret_is_scrubbed_from_every_error_text() {
        let e = scrub(
            AzureError::Auth("proxy said: header=s3cret-header-value".into()),
            Some("s3cret-header-value"),
        );
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = scrub(
            AzureError::Exhausted {
                api: Api::Token,
                attempts: 3,
                last: "body echoed s3cret-header-value".into(),
                kind: crate::azure::ErrorKind::Transient,
            },
            Some("s3cret-header-value"),
        );
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
