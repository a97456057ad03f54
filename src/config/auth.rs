//! `[auth]` and each tenant's `[tenants.auth]`: how miaudit obtains tokens. Everything a credential
//! needs is read here, from the file and the environment the Azure SDKs read, so a credential never
//! looks at the process environment itself and a misconfiguration is one clear line at start-up.
//!
//! Methods (docs/azure-behaviour.md §6): `client_secret`, `client_certificate` (a PEM certificate and
//! its RSA private key, signed into a JWT client assertion), `workload_identity` (the federated token
//! file of AKS workload identity as the client assertion), `managed_identity` (IMDS, or the App Service
//! / Container Apps / Functions endpoint), `azure_cli` (`az account get-access-token`), and `auto`, the
//! default: the first of those the environment offers, in the order of Microsoft's DefaultAzureCredential.

use super::read::Reader;
use super::{Env, Secret};
use std::path::PathBuf;

/// The default IMDS base address (MI-VMTOKEN).
pub const DEFAULT_IMDS: &str = "http://169.254.169.254";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Auto,
    ClientSecret,
    ClientCertificate,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
}

impl AuthMethod {
    pub const ALL: [Self; 6] = [
        Self::Auto,
        Self::ClientSecret,
        Self::ClientCertificate,
        Self::WorkloadIdentity,
        Self::ManagedIdentity,
        Self::AzureCli,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::ClientSecret => "client_secret",
            Self::ClientCertificate => "client_certificate",
            Self::WorkloadIdentity => "workload_identity",
            Self::ManagedIdentity => "managed_identity",
            Self::AzureCli => "azure_cli",
        }
    }

    /// How a log line names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "automatic choice",
            Self::ClientSecret => "client secret",
            Self::ClientCertificate => "client certificate",
            Self::WorkloadIdentity => "workload identity",
            Self::ManagedIdentity => "managed identity",
            Self::AzureCli => "Azure CLI",
        }
    }
}

/// A certificate credential: the certificate chain (DER, the application's certificate first) and the
/// RSA private key (PEM, PKCS#8 or PKCS#1), as read from the configured files.
#[derive(Clone)]
pub struct ClientCertificate {
    pub chain: Vec<Vec<u8>>,
    pub key_pem: Secret,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Where a managed identity's token comes from.
#[derive(Debug, Clone)]
pub enum ManagedIdentitySource {
    /// The instance metadata service of a VM or VM scale set (its base address).
    Imds(String),
    /// App Service, Functions, Container Apps: `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`.
    AppService { endpoint: String, header: Secret },
}

impl ManagedIdentitySource {
    /// The IMDS base address, when that is the source.
    pub fn imds(&self) -> Option<&str> {
        match self {
            Self::Imds(base) => Some(base),
            Self::AppService { .. } => None,
        }
    }
}

/// Which managed identity: the system-assigned one, or a user-assigned one by one of its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedIdentityId {
    System,
    ClientId(String),
    ObjectId(String),
    ResourceId(String),
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub method: AuthMethod,
    /// The application (client) id: of the app registration, the workload identity's, or the
    /// user-assigned managed identity's.
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub certificate: Option<ClientCertificate>,
    /// Send the chain as `x5c` in the assertion's header (subject name / issuer authentication).
    pub send_certificate_chain: bool,
    pub federated_token_file: Option<PathBuf>,
    pub managed_identity: ManagedIdentitySource,
    pub managed_identity_id: ManagedIdentityId,
}

impl AuthSettings {
    /// What a scan with this credential still lacks, one line each (`prefix` names the table).
    pub fn missing(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let need_client = matches!(
            self.method,
            AuthMethod::ClientSecret | AuthMethod::ClientCertificate | AuthMethod::WorkloadIdentity
        );
        if need_client && self.client_id.is_none() {
            errors.push(format!(
                "{prefix}.client_id: missing (or set AZURE_CLIENT_ID)"
            ));
        }
        match self.method {
            AuthMethod::ClientSecret if self.client_secret.is_none() => errors.push(format!(
                "{prefix}.client_secret: missing (set AZURE_CLIENT_SECRET, {prefix}.client_secret_file or {prefix}.client_secret)"
            )),
            AuthMethod::ClientCertificate if self.certificate.is_none() => errors.push(format!(
                "{prefix}.certificate_path: missing (or set AZURE_CLIENT_CERTIFICATE_PATH)"
            )),
            AuthMethod::WorkloadIdentity if self.federated_token_file.is_none() => {
                errors.push(format!(
                    "{prefix}.federated_token_file: missing (or set AZURE_FEDERATED_TOKEN_FILE)"
                ))
            }
            _ => {}
        }
        errors
    }
}

/// Reads the `auth` section of `r`'s root; problems are named with `prefix` (`auth`, or
/// `tenants[1].auth`). Secrets read from files join `secrets`.
pub(super) fn read_auth(
    r: &mut Reader<'_>,
    env: &Env,
    secrets: &mut Vec<String>,
    prefix: &str,
) -> AuthSettings {
    let start = r.errors.len();
    let method = match r.string("auth", "method").as_deref().map(str::trim) {
        None => AuthMethod::Auto,
        Some(m) => match AuthMethod::ALL.into_iter().find(|k| k.as_str() == m) {
            Some(k) => k,
            None => {
                r.errors.push(format!(
                    "auth.method: {m:?} is not one of {}",
                    AuthMethod::ALL.map(AuthMethod::as_str).join(", ")
                ));
                AuthMethod::Auto
            }
        },
    };
    let var = |name: &str| env.get(name).filter(|v| !v.trim().is_empty()).cloned();
    let client_id = r
        .string("auth", "client_id")
        .or_else(|| var("AZURE_CLIENT_ID"))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let client_secret = read_client_secret(r, env, secrets);
    let certificate_path = r
        .string("auth", "certificate_path")
        .or_else(|| var("AZURE_CLIENT_CERTIFICATE_PATH"));
    let private_key_path = r.string("auth", "private_key_path");
    // Only a certificate the method may use is read: `auto` uses one when it is there.
    let certificate = match certificate_path {
        Some(p) if matches!(method, AuthMethod::ClientCertificate | AuthMethod::Auto) => {
            match read_certificate(&p, private_key_path.as_deref()) {
                Ok(c) => {
                    secrets.push(c.key_pem.expose().to_owned());
                    Some(c)
                }
                Err(e) => {
                    r.errors.push(e);
                    None
                }
            }
        }
        _ => None,
    };
    let send_certificate_chain = r
        .boolean("auth", "send_certificate_chain")
        .or_else(|| {
            var("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true"))
        })
        .unwrap_or(false);
    let federated_token_file = r
        .string("auth", "federated_token_file")
        .or_else(|| var("AZURE_FEDERATED_TOKEN_FILE"))
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .map(PathBuf::from);
    let imds = r
        .string("auth", "imds_endpoint")
        .or_else(|| var("AZURE_POD_IDENTITY_AUTHORITY_HOST"))
        .unwrap_or_else(|| DEFAULT_IMDS.to_owned());
    let imds = match url::Url::parse(imds.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            imds.trim().trim_end_matches('/').to_owned()
        }
        _ => {
            r.errors.push(format!(
                "auth.imds_endpoint: {imds:?} is not an http(s) address such as \"{DEFAULT_IMDS}\""
            ));
            DEFAULT_IMDS.to_owned()
        }
    };
    let managed_identity = match (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
        // Service Fabric sets the same two variables (and a server thumbprint), for another protocol.
        (Some(_), Some(header)) if var("IDENTITY_SERVER_THUMBPRINT").is_some() => {
            secrets.push(header);
            if method == AuthMethod::ManagedIdentity {
                r.errors.push(
                    "auth.method: managed identity on Service Fabric (IDENTITY_SERVER_THUMBPRINT is set) is not supported; use a certificate or workload identity"
                        .into(),
                );
            }
            ManagedIdentitySource::Imds(imds)
        }
        (Some(endpoint), Some(header)) => {
            secrets.push(header.clone());
            ManagedIdentitySource::AppService {
                endpoint: endpoint.trim().to_owned(),
                header: Secret::new(header),
            }
        }
        _ => ManagedIdentitySource::Imds(imds),
    };
    let non_empty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let object_id = non_empty(r.string("auth", "object_id"));
    let resource_id = non_empty(r.string("auth", "mi_res_id"));
    let managed_identity_id = match (object_id, resource_id) {
        (Some(_), Some(_)) => {
            r.errors.push(
                "auth.mi_res_id: set one of client_id, object_id and mi_res_id for a user-assigned managed identity"
                    .into(),
            );
            ManagedIdentityId::System
        }
        (Some(o), None) => ManagedIdentityId::ObjectId(o.trim().to_owned()),
        (None, Some(m)) => ManagedIdentityId::ResourceId(m.trim().to_owned()),
        (None, None) => match &client_id {
            Some(c) => ManagedIdentityId::ClientId(c.clone()),
            None => ManagedIdentityId::System,
        },
    };
    // Every message of this table names it as the caller does.
    if prefix != "auth" {
        for e in &mut r.errors[start..] {
            if let Some(rest) = e.strip_prefix("auth.") {
                *e = format!("{prefix}.{rest}");
            }
        }
    }
    AuthSettings {
        method,
        client_id,
        client_secret,
        certificate,
        send_certificate_chain,
        federated_token_file,
        managed_identity,
        managed_identity_id,
    }
}

/// The client secret: inline, from `client_secret_file`, or `AZURE_CLIENT_SECRET`.
fn read_client_secret(r: &mut Reader<'_>, env: &Env, secrets: &mut Vec<String>) -> Option<Secret> {
    let inline = r.string("auth", "client_secret");
    let file = r.string("auth", "client_secret_file");
    if inline.is_some() && file.is_some() {
        r.errors.push(
            "auth.client_secret_file: set either client_secret or client_secret_file, not both"
                .into(),
        );
    }
    let from_file = file.and_then(|f| match std::fs::read_to_string(&f) {
        Ok(s) => {
            let s = s.trim_end_matches(['\r', '\n']).to_owned();
            secrets.push(s.clone());
            Some(s)
        }
        Err(e) => {
            r.errors.push(format!(
                "auth.client_secret_file: cannot read the file it names: {e}"
            ));
            None
        }
    });
    inline
        .or(from_file)
        .or_else(|| env.get("AZURE_CLIENT_SECRET").cloned())
        .filter(|s| !s.trim().is_empty())
        .map(Secret::new)
}

/// The certificate chain from `cert_path` (PEM) and the private key from `key_path`, or from the same
/// file when no key path is given. Errors name the key and never quote the files.
fn read_certificate(cert_path: &str, key_path: Option<&str>) -> Result<ClientCertificate, String> {
    let read = |key: &str, path: &str| {
        std::fs::read(path)
            .map_err(|e| format!("auth.{key}: cannot read {path}: {e}"))
            .and_then(|bytes| {
                pem::parse_many(&bytes).map_err(|_| {
                    format!(
                        "auth.{key}: {path} is not PEM (PKCS#12 is not read: convert it with \
                         `openssl pkcs12 -in cert.pfx -out cert.pem -nodes`)"
                    )
                })
            })
    };
    let blocks = read("certificate_path", cert_path)?;
    if blocks.is_empty() {
        return Err(format!(
            "auth.certificate_path: {cert_path} is not PEM (PKCS#12 is not read: convert it with \
             `openssl pkcs12 -in cert.pfx -out cert.pem -nodes`)"
        ));
    }
    let chain: Vec<Vec<u8>> = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.contents().to_vec())
        .collect();
    if chain.is_empty() {
        return Err(format!(
            "auth.certificate_path: {cert_path} holds no \"BEGIN CERTIFICATE\" block"
        ));
    }
    let key_blocks = match key_path {
        Some(k) => read("private_key_path", k)?,
        None => blocks,
    };
    let key_from = key_path.map_or("certificate_path", |_| "private_key_path");
    let key = key_blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY"));
    match key {
        Some(k) if k.tag() == "PRIVATE KEY" || k.tag() == "RSA PRIVATE KEY" => {
            let pem_text = pem::encode(k);
            // Refuse at start-up what could not sign later.
            jsonwebtoken::EncodingKey::from_rsa_pem(pem_text.as_bytes()).map_err(|_| {
                format!("auth.{key_from}: the private key is not an RSA key miaudit can sign with (PKCS#8 or PKCS#1 PEM, unencrypted)")
            })?;
            // ... and a key that is not the certificate's: Entra would refuse every assertion
            // (AADSTS700027) at the first token.
            let pair = if k.tag() == "PRIVATE KEY" {
                aws_lc_rs::rsa::KeyPair::from_pkcs8(k.contents())
            } else {
                aws_lc_rs::rsa::KeyPair::from_der(k.contents())
            };
            if let Ok(pair) = pair {
                use aws_lc_rs::signature::KeyPair as _;
                let public: &[u8] = pair.public_key().as_ref();
                if !chain[0].windows(public.len()).any(|w| w == public) {
                    return Err(format!(
                        "auth.{key_from}: the private key does not belong to the certificate in {cert_path} (its public key is not the certificate's)"
                    ));
                }
            }
            Ok(ClientCertificate {
                chain,
                key_pem: Secret::new(pem_text),
            })
        }
        Some(k) => Err(format!(
            "auth.{key_from}: a {:?} block is not supported: give an unencrypted RSA key (\"BEGIN PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\")",
            k.tag()
        )),
        None => Err(format!(
            "auth.{key_from}: no private key found (put it in the certificate's PEM file or name it with private_key_path)"
        )),
    }
}
