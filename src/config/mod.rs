//! Typed configuration: a TOML file, then `MIAUDIT_<SECTION>__<KEY>` environment overrides, then the
//! standard Azure SDK variables (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`,
//! `AZURE_AUTHORITY_HOST`) for whatever the file and overrides leave unset.
//!
//! Read against an explicit schema rather than straight into serde structs, so that *every* problem
//! (unknown key, wrong type, bad value) is reported at once, one line each naming the key.
//!
//! - `secrets`: the [`Secret`] type and keeping secrets out of every message;
//! - `read`: the schema, the value parsers and one reader per section;
//! - this file: the settings types and loading.

mod auth;
mod notify;
mod read;
mod secrets;
mod sections;
#[cfg(test)]
mod tests;

use crate::domain::TenantId;
pub use auth::{
    AuthMethod, AuthSettings, ClientCertificate, DEFAULT_IMDS, ManagedIdentityId,
    ManagedIdentitySource,
};
pub use notify::{DEFAULT_MAX_ATTEMPTS, NotifySettings, WebhookSettings, parse_expiry};
use read::*;
pub use read::{parse_duration, parse_size};
pub use secrets::Secret;
use secrets::*;
use sections::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Every problem found, one line each. No line holds a secret: the TOML parser's error is given as line,
/// column and message without the source line it quotes, and every configured secret value (client
/// secret, API token) is replaced by `<redacted>` wherever a message would echo it (a secret pasted into
/// another key, say).
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Public,
    UsGovernment,
    China,
}

impl Cloud {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "public" => Some(Self::Public),
            "usgovernment" => Some(Self::UsGovernment),
            "china" => Some(Self::China),
            _ => None,
        }
    }

    /// The cloud's own endpoints and `.default` audiences.
    pub fn settings(self) -> AzureSettings {
        let (authority, graph, arm) = self.endpoints();
        AzureSettings {
            cloud: self,
            authority_host: authority.to_owned(),
            graph_endpoint: graph.to_owned(),
            arm_endpoint: arm.to_owned(),
            graph_scope: format!("{graph}/.default"),
            arm_scope: format!("{arm}/.default"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::UsGovernment => "usgovernment",
            Self::China => "china",
        }
    }

    /// The cloud whose host `url` names (authority, Graph or ARM, as in [`Cloud::endpoints`], and the
    /// US Government's DoD Graph); `None` for any other host (a proxy, the simulator).
    pub fn of_url(url: &str) -> Option<Self> {
        let host = url::Url::parse(url.trim())
            .ok()?
            .host_str()?
            .to_ascii_lowercase();
        let under = |suffix: &str| host == suffix || host.ends_with(&format!(".{suffix}"));
        if [
            "login.microsoftonline.com",
            "graph.microsoft.com",
            "management.azure.com",
            "management.core.windows.net",
        ]
        .iter()
        .any(|h| under(h))
        {
            Some(Self::Public)
        } else if [
            "login.microsoftonline.us",
            "graph.microsoft.us",
            "dod-graph.microsoft.us",
            "management.usgovcloudapi.net",
            "management.core.usgovcloudapi.net",
        ]
        .iter()
        .any(|h| under(h))
        {
            Some(Self::UsGovernment)
        } else if under("chinacloudapi.cn") {
            Some(Self::China)
        } else {
            None
        }
    }

    /// Authority host, Graph root and ARM root of each national cloud (G-NAT; docs/azure-behaviour.md §6d).
    pub fn endpoints(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Public => (
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
                "https://management.azure.com",
            ),
            Self::UsGovernment => (
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
                "https://management.usgovcloudapi.net",
            ),
            Self::China => (
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
                "https://management.chinacloudapi.cn",
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AzureSettings {
    pub cloud: Cloud,
    pub authority_host: String,
    pub graph_endpoint: String,
    pub arm_endpoint: String,
    pub graph_scope: String,
    pub arm_scope: String,
}

#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub id: TenantId,
    pub name: Option<String>,
    /// `[tenants.auth]`: replaces `[auth]` whole for this tenant.
    pub auth: Option<AuthSettings>,
    /// `cloud` of this tenant when it is not `[azure]`'s: that cloud's endpoints and audiences.
    pub azure: Option<AzureSettings>,
}

/// Default of `[database] retain_scans`.
pub const DEFAULT_RETAIN_SCANS: u32 = 20;

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: String,
    /// How many recorded scans keep their per-identity verdicts; older ones keep their summary.
    pub retain_scans: u32,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Bearer token of the mutating endpoints (and of reads and metrics when they require it).
    pub api_token: Option<Secret>,
    /// Every request but `/healthz`, `/readyz` (and `/metrics`, see below) needs the bearer token:
    /// findings, scans, the export.
    pub require_token_for_reads: bool,
    /// `/metrics` needs the bearer token (Prometheus sends it with `authorization: {credentials: ...}`).
    pub metrics_require_token: bool,
}

impl HttpSettings {
    /// The listen address is reachable from elsewhere (not loopback) and the API's reads need no token.
    pub fn reads_exposed(&self) -> bool {
        !self.listen.ip().to_canonical().is_loopback() && !self.require_token_for_reads
    }
}

#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub cron: String,
    pub scan_on_start: bool,
}

#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    pub confirm_after: Duration,
}

#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// ARM checks in flight at once per tenant.
    pub concurrency: usize,
    /// Tenants scanned at once (each with its own clients, tokens and rate budgets).
    pub max_concurrent_tenants: usize,
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// Overall time one scan may take before it is abandoned (nothing of it is recorded).
    pub timeout: Duration,
    /// Repeat scans read only what changed in Graph (delta), with a full listing at least every 6 days.
    pub graph_delta: bool,
    /// Largest Azure response body read, in bytes; a larger one fails that call.
    pub max_response_bytes: usize,
    /// Longest server-requested wait (`Retry-After`, quota resets) honoured; a longer one fails that
    /// call instead of sleeping.
    pub max_server_wait: Duration,
}

/// Default of `[scan] max_concurrent_tenants`.
pub const DEFAULT_CONCURRENT_TENANTS: usize = 4;

/// Default of `[scan] max_response_bytes`: Resource Graph documents a 16 MB limit on its answers;
/// twice that leaves headroom for JSON escaping and the other APIs' largest pages.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;
/// Smallest `[scan] max_response_bytes` accepted: a Graph page of 999 identities is larger.
pub const MIN_MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Largest `[scan] max_response_bytes` accepted (a body is held in memory while decoded).
pub const MAX_MAX_RESPONSE_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub json: bool,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub azure: AzureSettings,
    pub auth: AuthSettings,
    pub tenants: Vec<TenantSettings>,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub schedule: ScheduleSettings,
    pub lifecycle: LifecycleSettings,
    pub scan: ScanSettings,
    pub log: LogSettings,
    pub notify: NotifySettings,
    /// `[[suppressions]]`: the configuration's allowlist.
    pub suppressions: Vec<crate::domain::Suppression>,
}

/// Where environment values come from; a map in tests, the process environment otherwise.
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars().collect()
}

impl Settings {
    /// Loads the file (if any) and the environment. A missing `path` means built-in defaults.
    pub fn load(path: Option<&Path>, env: &Env) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_table(toml::Table::new(), env),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(vec![format!("config file {}: {e}", p.display())]))?;
                Self::parse(&text, p, env)
            }
        }
    }

    /// Settings from configuration text held in memory (the demo and tests build theirs so), with the
    /// environment's overrides, checked as a file would be.
    pub fn from_toml_str(text: &str, env: &Env) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("<configuration>"), env)
    }

    fn parse(text: &str, origin: &Path, env: &Env) -> Result<Self, ConfigError> {
        let root = text.parse::<toml::Table>().map_err(|e| {
            let mut secrets = env_secrets(env);
            secrets.extend(secrets_in_text(text));
            ConfigError(scrub(vec![syntax_error(origin, text, &e)], &secrets))
        })?;
        Self::from_table(root, env)
    }

    fn from_table(mut root: toml::Table, env: &Env) -> Result<Self, ConfigError> {
        let mut secrets = configured_secrets(&root, env);
        let mut errors = unknown_keys(&root);
        errors.extend(apply_env_overrides(&mut root, env));
        let mut r = Reader {
            root: &root,
            errors: Vec::new(),
        };
        let mut url_errors = Vec::new();
        let azure = read_azure(&mut r, env, &mut url_errors);
        let cloud = azure.cloud;
        let settings = Self {
            azure,
            auth: auth::read_auth(&mut r, env, &mut secrets, "auth"),
            tenants: read_tenants(&mut r, env, &mut secrets, cloud),
            database: read_database(&mut r),
            http: read_http(&mut r, &mut secrets),
            schedule: read_schedule(&mut r),
            lifecycle: read_lifecycle(&mut r),
            scan: read_scan(&mut r),
            log: read_log(&mut r),
            notify: notify::read_notify(&mut r, &mut secrets),
            suppressions: notify::read_suppressions(&mut r),
        };
        errors.extend(r.errors);
        errors.extend(url_errors);
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError(scrub(errors, &secrets)))
        }
    }

    /// What a scan needs on top of a valid file: tenants and credentials.
    pub fn check_scan_ready(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        if self.tenants.is_empty() {
            errors.push("tenants: no tenant configured (add [[tenants]] id = \"...\" or set AZURE_TENANT_ID)".into());
        }
        let shared = self.tenants.iter().filter(|t| t.auth.is_none()).count();
        if shared > 0 {
            errors.extend(self.auth.missing("auth"));
        }
        if shared > 1 && self.auth.method == AuthMethod::ManagedIdentity {
            errors.push(format!(
                "auth.method: a managed identity belongs to one tenant, and {shared} tenants share [auth]: give the others a [tenants.auth] of their own"
            ));
        }
        for (n, t) in self.tenants.iter().enumerate() {
            if let Some(a) = &t.auth {
                errors.extend(a.missing(&format!("tenants[{n}].auth")));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }

    /// The cloud endpoints and audiences of a tenant: its own cloud's, else `[azure]`.
    pub fn azure_for(&self, tenant: &TenantId) -> &AzureSettings {
        self.tenants
            .iter()
            .find(|t| &t.id == tenant)
            .and_then(|t| t.azure.as_ref())
            .unwrap_or(&self.azure)
    }

    /// The credential settings a tenant's tokens are requested with: its own, else `[auth]`.
    pub fn auth_for(&self, tenant: &TenantId) -> &AuthSettings {
        self.tenants
            .iter()
            .find(|t| &t.id == tenant)
            .and_then(|t| t.auth.as_ref())
            .unwrap_or(&self.auth)
    }

    pub fn tenant_ids(&self) -> Vec<TenantId> {
        self.tenants.iter().map(|t| t.id.clone()).collect()
    }
}
