//! Typed configuration: a TOML file, then `MIAUDIT_<SECTION>__<KEY>` environment overrides, then the
//! standard Azure SDK variables (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`,
//! `AZURE_AUTHORITY_HOST`) for whatever the file and overrides leave unset.
//!
//! Read against an explicit schema rather than straight into serde structs, so that *every* problem
//! (unknown key, wrong type, bad value) is reported at once, one line each naming the key.

use secrecy::ExposeSecret;
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

/// A configured secret (client secret, API token): a `secrecy::SecretString`, zeroed in memory when
/// dropped and never printed (its `Debug` says `Secret(<redacted>)`). `expose` is the one way to read it,
/// at the one place that sends it.
#[derive(Clone)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The keys whose values are secrets.
const SECRET_KEYS: &[(&str, &str)] = &[("auth", "client_secret"), ("http", "api_token")];

/// Environment variables that carry a secret besides the `MIAUDIT_` overrides of [`SECRET_KEYS`].
const SECRET_ENV: &[&str] = &["AZURE_CLIENT_SECRET"];

/// Secrets shorter than this are not scrubbed out of messages: replacing every "t" of a message would
/// make it unreadable, and such a value protects nothing anyway.
const MIN_SCRUBBED: usize = 4;

/// Replaces every occurrence of each secret (also in its `{:?}`-escaped form) in `lines`.
fn scrub(mut lines: Vec<String>, secrets: &[String]) -> Vec<String> {
    for secret in secrets.iter().filter(|s| s.chars().count() >= MIN_SCRUBBED) {
        let escaped = format!("{secret:?}");
        let escaped = &escaped[1..escaped.len() - 1];
        for line in &mut lines {
            for form in [secret.as_str(), escaped] {
                if line.contains(form) {
                    *line = line.replace(form, "<redacted>");
                }
            }
        }
    }
    lines
}

/// The secret values the environment holds.
fn env_secrets(env: &Env) -> Vec<String> {
    env.iter()
        .filter(|(name, _)| {
            SECRET_ENV.contains(&name.as_str())
                || name
                    .strip_prefix("MIAUDIT_")
                    .and_then(|rest| rest.split_once("__"))
                    .is_some_and(|(s, k)| {
                        SECRET_KEYS.iter().any(|(ss, kk)| {
                            s.eq_ignore_ascii_case(ss) && k.eq_ignore_ascii_case(kk)
                        })
                    })
        })
        .map(|(_, v)| v.clone())
        .collect()
}

/// Whether a key's name says its value may be a secret (or a secret pasted in the wrong place).
fn secret_like(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "token", "password"]
        .iter()
        .any(|w| key.contains(w))
}

/// A configured value as an error message may show it: never the value of a key whose name says
/// secret, token or password (`require_token_for_reads = "<the token>"` is a typo, not a boolean).
fn shown(key: &str, v: &dyn std::fmt::Display) -> String {
    if secret_like(key) {
        "a value (not shown)".into()
    } else {
        v.to_string()
    }
}

/// Values of lines of a file that does not parse that look like a secret's `key = value`: the raw value
/// and the value without its quotes or a trailing comment, each a candidate to scrub.
fn secrets_in_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key
            .rsplit('.')
            .next()
            .unwrap_or(key)
            .trim()
            .trim_matches(['"', '\'', '[', ']'])
            .to_ascii_lowercase();
        if !secret_like(&key) {
            continue;
        }
        let raw = value.trim();
        let unquoted = raw.trim_matches(['"', '\'']);
        let uncommented = raw
            .split(" #")
            .next()
            .unwrap_or(raw)
            .trim()
            .trim_matches(['"', '\'']);
        out.extend([raw, unquoted, uncommented].map(str::to_owned));
    }
    out
}

/// 1-based line and column (in characters) of byte offset `at` of `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// A TOML syntax error as one line: where and what, never the source line (it may be the secret's).
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!(
                "config file {}: TOML syntax error at line {line}, column {column}: {message}",
                path.display()
            )
        }
        None => format!(
            "config file {}: TOML syntax error: {message}",
            path.display()
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Public,
    UsGovernment,
    China,
}

impl Cloud {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecret,
    ClientCertificate,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub method: AuthMethod,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub id: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: String,
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
}

/// Known sections and keys. `tenants` is an array of tables with `id` and `name`.
const SCHEMA: &[(&str, &[&str])] = &[
    (
        "azure",
        &[
            "cloud",
            "authority_host",
            "graph_endpoint",
            "arm_endpoint",
            "graph_scope",
            "arm_scope",
        ],
    ),
    (
        "auth",
        &["method", "client_id", "client_secret", "client_secret_file"],
    ),
    ("database", &["url"]),
    (
        "http",
        &[
            "listen",
            "api_token",
            "require_token_for_reads",
            "metrics_require_token",
        ],
    ),
    ("schedule", &["cron", "scan_on_start"]),
    ("lifecycle", &["confirm_after"]),
    (
        "scan",
        &[
            "concurrency",
            "request_timeout",
            "max_retries",
            "retry_base_delay",
            "retry_max_delay",
            "timeout",
            "graph_delta",
            "max_response_bytes",
            "max_server_wait",
        ],
    ),
    ("log", &["level", "format"]),
];

/// Parses `"0s"`, `"500ms"`, `"30s"`, `"30m"`, `"2h"`, `"1h30m"`, `"1d"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                Duration::from_millis(n)
            }
            's' => Duration::from_secs(n),
            'm' => Duration::from_secs(n.checked_mul(60)?),
            'h' => Duration::from_secs(n.checked_mul(3600)?),
            'd' => Duration::from_secs(n.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(unit)?;
        any = true;
    }
    (num.is_empty() && any).then_some(total)
}

/// Parses a size in bytes: `"65536"`, `"64KiB"`, `"32MiB"`, `"1GiB"` (powers of 1024) or `"16MB"`
/// (powers of 1000); the unit is case-insensitive and may follow a space.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let factor: u64 = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// `http` is only for loopback (tests, the simulator); everything else must be `https`.
fn check_endpoint(key: &str, v: &str, errors: &mut Vec<String>) -> String {
    let trimmed = v.trim().trim_end_matches('/').to_owned();
    match url::Url::parse(&trimmed) {
        Ok(u) => {
            let loopback = match u.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if u.host().is_none() {
                errors.push(format!("{key}: {v:?} has no host"));
            } else if u.scheme() == "http" && !loopback {
                errors.push(format!(
                    "{key}: {v:?} must use https (http is allowed only for loopback addresses)"
                ));
            } else if u.scheme() != "http" && u.scheme() != "https" {
                errors.push(format!("{key}: {v:?} must be an http(s) URL"));
            } else if u.query().is_some() || u.fragment().is_some() {
                errors.push(format!("{key}: {v:?} must be a bare root URL"));
            }
        }
        Err(e) => errors.push(format!("{key}: {v:?} is not a URL ({e})")),
    }
    trimmed
}

/// A size for a message: whole KiB, MiB or GiB when it is one.
fn show_size(n: u64) -> String {
    for (unit, f) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= f && n.is_multiple_of(f) {
            return format!("{}{unit}", n / f);
        }
    }
    n.to_string()
}

/// Reads typed values out of the merged table, collecting problems.
struct Reader<'a> {
    root: &'a toml::Table,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn get(&self, section: &str, key: &str) -> Option<&toml::Value> {
        self.root.get(section)?.as_table()?.get(key)
    }

    fn string(&mut self, section: &str, key: &str) -> Option<String> {
        match self.get(section, key)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.errors.push(format!(
                    "{section}.{key}: expected a string, found {}",
                    other.type_str()
                ));
                None
            }
        }
    }

    fn boolean(&mut self, section: &str, key: &str) -> Option<bool> {
        match self.get(section, key)? {
            toml::Value::Boolean(b) => Some(*b),
            toml::Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            toml::Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            other => {
                self.errors.push(format!(
                    "{section}.{key}: expected true or false, found {}",
                    shown(key, other)
                ));
                None
            }
        }
    }

    fn int(&mut self, section: &str, key: &str, min: i64, max: i64) -> Option<i64> {
        let v = match self.get(section, key)? {
            toml::Value::Integer(i) => Some(*i),
            toml::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match v {
            Some(i) if (min..=max).contains(&i) => Some(i),
            _ => {
                let found = self
                    .get(section, key)
                    .map(|v| shown(key, v))
                    .unwrap_or_default();
                self.errors.push(format!(
                    "{section}.{key}: expected a whole number from {min} to {max}, found {found}"
                ));
                None
            }
        }
    }

    fn size(&mut self, section: &str, key: &str, min: u64, max: u64) -> Option<u64> {
        let v = self.get(section, key)?;
        let parsed = match v {
            toml::Value::Integer(i) => u64::try_from(*i).ok(),
            toml::Value::String(s) => parse_size(s),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.errors.push(format!(
                    "{section}.{key}: expected a size from {} to {} (bytes, or with a unit such as \"32MiB\"), found {}",
                    show_size(min),
                    show_size(max),
                    shown(key, v)
                ));
                None
            }
        }
    }

    fn duration(&mut self, section: &str, key: &str) -> Option<Duration> {
        let v = self.get(section, key)?;
        let parsed = match v {
            toml::Value::String(s) => parse_duration(s),
            toml::Value::Integer(i) if *i >= 0 => Some(Duration::from_secs(i.unsigned_abs())),
            _ => None,
        };
        if parsed.is_none() {
            self.errors.push(format!(
                "{section}.{key}: expected a duration such as \"0s\", \"30m\" or \"2h\", found {}",
                shown(key, v)
            ));
        }
        parsed
    }
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
        let settings = Self {
            azure: read_azure(&mut r, env, &mut url_errors),
            auth: read_auth(&mut r, env, &mut secrets),
            tenants: read_tenants(&mut r, env),
            database: read_database(&mut r),
            http: read_http(&mut r),
            schedule: read_schedule(&mut r),
            lifecycle: read_lifecycle(&mut r),
            scan: read_scan(&mut r),
            log: read_log(&mut r),
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
        if self.auth.client_id.is_none() {
            errors.push("auth.client_id: missing (or set AZURE_CLIENT_ID)".into());
        }
        if self.auth.client_secret.is_none() {
            errors.push("auth.client_secret: missing (set AZURE_CLIENT_SECRET, auth.client_secret_file or auth.client_secret)".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }

    pub fn tenant_ids(&self) -> Vec<String> {
        self.tenants.iter().map(|t| t.id.clone()).collect()
    }
}

/// A GUID or a verified domain name: the two forms the token endpoint takes as `{tenant}`.
fn is_tenant_id(s: &str) -> bool {
    let s = s.trim();
    let guid = s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let domain = s.contains('.')
        && s.len() <= 253
        && s.split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    guid || domain
}

/// Every secret value configured (file and environment), to scrub out of whatever a message echoes.
fn configured_secrets(root: &toml::Table, env: &Env) -> Vec<String> {
    let mut secrets = env_secrets(env);
    for (section, key) in SECRET_KEYS {
        if let Some(v) = root
            .get(*section)
            .and_then(toml::Value::as_table)
            .and_then(|t| t.get(*key))
            .and_then(toml::Value::as_str)
        {
            secrets.push(v.to_owned());
        }
    }
    secrets
}

/// Unknown sections and keys of the file, one line each.
fn unknown_keys(root: &toml::Table) -> Vec<String> {
    let mut errors = Vec::new();
    for (section, value) in root {
        if section == "tenants" {
            match value.as_array() {
                Some(items) => {
                    for (n, t) in items.iter().enumerate() {
                        match t.as_table() {
                            Some(t) => {
                                for k in t.keys().filter(|k| *k != "id" && *k != "name") {
                                    errors.push(format!("tenants[{n}].{k}: unknown key"));
                                }
                            }
                            None => errors.push(format!("tenants[{n}]: expected a table")),
                        }
                    }
                }
                None => errors.push("tenants: expected an array of [[tenants]] tables".into()),
            }
            continue;
        }
        match SCHEMA.iter().find(|(s, _)| s == section) {
            None => errors.push(format!("{section}: unknown section")),
            Some((_, keys)) => match value.as_table() {
                None => errors.push(format!("{section}: expected a table")),
                Some(t) => {
                    for k in t.keys().filter(|k| !keys.contains(&k.as_str())) {
                        errors.push(format!("{section}.{k}: unknown key"));
                    }
                }
            },
        }
    }
    errors
}

/// Applies the `MIAUDIT_<SECTION>__<KEY>` overrides to the file's table; unknown keys are errors.
fn apply_env_overrides(root: &mut toml::Table, env: &Env) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("MIAUDIT_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let known = SCHEMA
            .iter()
            .any(|(s, keys)| *s == section && keys.contains(&key.as_str()));
        if !known {
            errors.push(format!("{name}: unknown key {section}.{key}"));
            continue;
        }
        let table = root
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(t) = table.as_table_mut() {
            t.insert(key, toml::Value::String(value.clone()));
        }
    }

    errors
}

/// `[azure]`: the cloud and its endpoints (with overrides), checked as URLs into `url_errors`.
fn read_azure(r: &mut Reader<'_>, env: &Env, url_errors: &mut Vec<String>) -> AzureSettings {
    // [azure]
    let cloud = match r.string("azure", "cloud").as_deref() {
        None | Some("public") => Cloud::Public,
        Some("usgovernment") => Cloud::UsGovernment,
        Some("china") => Cloud::China,
        Some(other) => {
            r.errors.push(format!(
                "azure.cloud: {other:?} is not one of public, usgovernment, china"
            ));
            Cloud::Public
        }
    };
    let (d_auth, d_graph, d_arm) = cloud.endpoints();
    let authority = r
        .string("azure", "authority_host")
        .or_else(|| env.get("AZURE_AUTHORITY_HOST").cloned())
        .unwrap_or_else(|| d_auth.to_owned());
    let graph = r
        .string("azure", "graph_endpoint")
        .unwrap_or_else(|| d_graph.to_owned());
    let arm = r
        .string("azure", "arm_endpoint")
        .unwrap_or_else(|| d_arm.to_owned());
    let graph_scope = r
        .string("azure", "graph_scope")
        .unwrap_or_else(|| format!("{d_graph}/.default"));
    let arm_scope = r
        .string("azure", "arm_scope")
        .unwrap_or_else(|| format!("{d_arm}/.default"));
    AzureSettings {
        cloud,
        authority_host: check_endpoint("azure.authority_host", &authority, url_errors),
        graph_endpoint: check_endpoint("azure.graph_endpoint", &graph, url_errors),
        arm_endpoint: check_endpoint("azure.arm_endpoint", &arm, url_errors),
        graph_scope,
        arm_scope,
    }
}

/// `[auth]`: the method, the client id and the client secret (inline, from a file, or the environment);
/// a secret read from a file joins `secrets`.
fn read_auth(r: &mut Reader<'_>, env: &Env, secrets: &mut Vec<String>) -> AuthSettings {
    // [auth]
    let method = match r.string("auth", "method").as_deref() {
        None | Some("client_secret") => AuthMethod::ClientSecret,
        Some("client_certificate") => AuthMethod::ClientCertificate,
        Some("workload_identity") => AuthMethod::WorkloadIdentity,
        Some("managed_identity") => AuthMethod::ManagedIdentity,
        Some("azure_cli") => AuthMethod::AzureCli,
        Some(other) => {
            r.errors.push(format!("auth.method: {other:?} is not one of client_secret, client_certificate, workload_identity, managed_identity, azure_cli"));
            AuthMethod::ClientSecret
        }
    };
    if method != AuthMethod::ClientSecret {
        r.errors
            .push("auth.method: only \"client_secret\" is implemented in this version".into());
    }
    let client_id = r
        .string("auth", "client_id")
        .or_else(|| env.get("AZURE_CLIENT_ID").cloned())
        .filter(|s| !s.trim().is_empty());
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
    let client_secret = inline
        .or(from_file)
        .or_else(|| env.get("AZURE_CLIENT_SECRET").cloned())
        .filter(|s| !s.is_empty())
        .map(Secret::new);

    AuthSettings {
        method,
        client_id,
        client_secret,
    }
}

/// `[[tenants]]` (or `AZURE_TENANT_ID` when none is listed), each once.
fn read_tenants(r: &mut Reader<'_>, env: &Env) -> Vec<TenantSettings> {
    // Each with where it was configured (for error messages).
    let mut tenants: Vec<(String, TenantSettings)> = Vec::new();
    if let Some(items) = r.root.get("tenants").and_then(toml::Value::as_array) {
        for (n, t) in items.iter().enumerate() {
            let Some(t) = t.as_table() else { continue };
            match t.get("id").and_then(toml::Value::as_str) {
                Some(id) if is_tenant_id(id) => tenants.push((
                    format!("tenants[{n}]"),
                    TenantSettings {
                        id: id.trim().to_ascii_lowercase(),
                        name: t
                            .get("name")
                            .and_then(toml::Value::as_str)
                            .map(str::to_owned),
                    },
                )),
                Some(id) => r.errors.push(format!(
                    "tenants[{n}].id: {id:?} is not a tenant id (a GUID or a domain name)"
                )),
                None => r.errors.push(format!("tenants[{n}].id: missing")),
            }
        }
    }
    if tenants.is_empty()
        && let Some(id) = env.get("AZURE_TENANT_ID").filter(|s| !s.trim().is_empty())
    {
        if is_tenant_id(id) {
            tenants.push((
                "AZURE_TENANT_ID".into(),
                TenantSettings {
                    id: id.trim().to_ascii_lowercase(),
                    name: None,
                },
            ));
        } else {
            r.errors
                .push(format!("AZURE_TENANT_ID: {id:?} is not a tenant id"));
        }
    }
    // The same tenant twice would be scanned twice into one scan (the store refuses that): checked
    // on the final list, ids already trimmed and lower-cased.
    for (i, (at, t)) in tenants.iter().enumerate() {
        if let Some((first, _)) = tenants[..i].iter().find(|(_, o)| o.id == t.id) {
            r.errors.push(format!(
                "{at}.id: {:?} is the same tenant as {first}.id (tenant ids compare case-insensitively); list each tenant once",
                t.id
            ));
        }
    }
    tenants.into_iter().map(|(_, t)| t).collect()
}

/// `[database]`.
fn read_database(r: &mut Reader<'_>) -> DatabaseSettings {
    // [database]
    let db_url = r
        .string("database", "url")
        .unwrap_or_else(|| "sqlite://miaudit.db".into());
    if !db_url.starts_with("sqlite:") {
        r.errors.push(format!(
            "database.url: {db_url:?} must be a sqlite: URL such as \"sqlite://miaudit.db\""
        ));
    }

    DatabaseSettings { url: db_url }
}

/// `[http]`: where to listen, the API token and what it guards.
fn read_http(r: &mut Reader<'_>) -> HttpSettings {
    // [http]
    let listen = r
        .string("http", "listen")
        .unwrap_or_else(|| "127.0.0.1:9464".into());
    let listen = listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        r.errors.push(format!(
            "http.listen: {listen:?} is not an address such as \"127.0.0.1:9464\""
        ));
        SocketAddr::from(([127, 0, 0, 1], 9464))
    });
    let api_token = r
        .string("http", "api_token")
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    let require_token_for_reads = r
        .boolean("http", "require_token_for_reads")
        .unwrap_or(false);
    let metrics_require_token = r.boolean("http", "metrics_require_token").unwrap_or(false);
    for (key, on) in [
        ("require_token_for_reads", require_token_for_reads),
        ("metrics_require_token", metrics_require_token),
    ] {
        if on && api_token.is_none() {
            r.errors.push(format!(
                "http.{key}: needs a token to require: set http.api_token (or MIAUDIT_HTTP__API_TOKEN)"
            ));
        }
    }

    HttpSettings {
        listen,
        api_token,
        require_token_for_reads,
        metrics_require_token,
    }
}

/// `[schedule]`.
fn read_schedule(r: &mut Reader<'_>) -> ScheduleSettings {
    // [schedule]
    let cron = r
        .string("schedule", "cron")
        .unwrap_or_else(|| "0 */30 * * * *".into());
    let fields = cron.split_whitespace().count();
    if !(cron.trim_start().starts_with('@') || fields == 6 || fields == 7) {
        r.errors.push(format!(
            "schedule.cron: {cron:?} needs 6 or 7 fields, seconds first (e.g. \"0 */30 * * * *\")"
        ));
    }
    let scan_on_start = r.boolean("schedule", "scan_on_start").unwrap_or(true);

    ScheduleSettings {
        cron,
        scan_on_start,
    }
}

/// `[lifecycle]`.
fn read_lifecycle(r: &mut Reader<'_>) -> LifecycleSettings {
    // [lifecycle]
    let confirm_after = r
        .duration("lifecycle", "confirm_after")
        .unwrap_or(Duration::from_secs(7200));

    LifecycleSettings { confirm_after }
}

/// `[scan]`: concurrency, timeouts, retries and the limits on what a server can make a scan do.
fn read_scan(r: &mut Reader<'_>) -> ScanSettings {
    // [scan]
    let concurrency = r.int("scan", "concurrency", 1, 256).unwrap_or(8);
    let request_timeout = r
        .duration("scan", "request_timeout")
        .unwrap_or(Duration::from_secs(30));
    if request_timeout.is_zero() {
        r.errors
            .push("scan.request_timeout: must be more than 0s".into());
    }
    let max_retries = r.int("scan", "max_retries", 0, 20).unwrap_or(5);
    let retry_base_delay = r
        .duration("scan", "retry_base_delay")
        .unwrap_or(Duration::from_millis(500));
    let retry_max_delay = r
        .duration("scan", "retry_max_delay")
        .unwrap_or(Duration::from_secs(30));

    let scan_timeout = r
        .duration("scan", "timeout")
        .unwrap_or(Duration::from_secs(3600));
    if scan_timeout.is_zero() {
        r.errors.push("scan.timeout: must be more than 0s".into());
    }

    let graph_delta = r.boolean("scan", "graph_delta").unwrap_or(false);
    let max_response_bytes = r
        .size(
            "scan",
            "max_response_bytes",
            MIN_MAX_RESPONSE_BYTES,
            MAX_MAX_RESPONSE_BYTES,
        )
        .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
    let max_server_wait = r
        .duration("scan", "max_server_wait")
        .unwrap_or(Duration::from_secs(300));

    ScanSettings {
        concurrency: usize::try_from(concurrency).unwrap_or(8),
        request_timeout,
        max_retries: u32::try_from(max_retries).unwrap_or(5),
        retry_base_delay,
        retry_max_delay,
        timeout: scan_timeout,
        graph_delta,
        max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
        max_server_wait,
    }
}

/// `[log]`.
fn read_log(r: &mut Reader<'_>) -> LogSettings {
    // [log]
    let level = r.string("log", "level").unwrap_or_else(|| "info".into());
    let json = match r.string("log", "format").as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            r.errors
                .push(format!("log.format: {other:?} is not one of text, json"));
            false
        }
    };

    LogSettings { level, json }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "2", "h", "2x", "-1s", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults_follow_the_public_cloud() {
        let s = Settings::load(None, &Env::new()).expect("defaults are valid");
        assert_eq!(s.azure.graph_endpoint, "https://graph.microsoft.com");
        assert_eq!(s.azure.arm_scope, "https://management.azure.com/.default");
        assert_eq!(s.lifecycle.confirm_after, Duration::from_secs(7200));
        assert!(s.check_scan_ready().is_err());
    }

    #[test]
    fn endpoint_overrides_keep_cloud_scopes() {
        let f =
            file("[azure]\ncloud = \"usgovernment\"\ngraph_endpoint = \"http://127.0.0.1:8080\"\n");
        let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
        assert_eq!(s.azure.graph_endpoint, "http://127.0.0.1:8080");
        assert_eq!(s.azure.graph_scope, "https://graph.microsoft.us/.default");
        assert_eq!(s.azure.authority_host, "https://login.microsoftonline.us");
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_the_key() {
        let f = file(
            "[azure]\ncloud = \"mars\"\narm_endpoint = \"http://example.com\"\nbogus = 1\n[scan]\nconcurrency = 0\n[lifecycle]\nconfirm_after = \"soon\"\n[extra]\nx = 1\n",
        );
        let err = Settings::load(Some(f.path()), &env(&[("MIAUDIT_HTTP__NOPE", "1")]))
            .expect_err("invalid");
        let text = err.0.join("\n");
        for key in [
            "azure.cloud",
            "azure.arm_endpoint",
            "azure.bogus",
            "scan.concurrency",
            "lifecycle.confirm_after",
            "extra",
            "MIAUDIT_HTTP__NOPE",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert_eq!(err.0.len(), 7, "{text}");
    }

    #[test]
    fn environment_overrides_the_file_and_sdk_variables_fill_gaps() {
        let f = file("[database]\nurl = \"sqlite://a.db\"\n[auth]\nclient_id = \"from-file\"\n");
        let s = Settings::load(
            Some(f.path()),
            &env(&[
                ("MIAUDIT_DATABASE__URL", "sqlite://b.db"),
                ("MIAUDIT_SCHEDULE__SCAN_ON_START", "false"),
                ("AZURE_CLIENT_ID", "from-env"),
                ("AZURE_CLIENT_SECRET", "s3cret"),
                ("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000aa"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.database.url, "sqlite://b.db");
        assert!(!s.schedule.scan_on_start);
        assert_eq!(s.auth.client_id.as_deref(), Some("from-file"));
        assert_eq!(s.tenants[0].id, "00000000-0000-0000-0000-0000000000aa");
        assert!(s.check_scan_ready().is_ok());
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let secret = file("abc\n");
        let f = file(&format!(
            "[auth]\nclient_secret_file = {:?}\n",
            secret.path().display().to_string()
        ));
        let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
        assert_eq!(
            s.auth.client_secret.as_ref().map(Secret::expose),
            Some("abc")
        );
    }

    #[test]
    fn unimplemented_auth_methods_are_refused() {
        let f = file("[auth]\nmethod = \"managed_identity\"\n");
        let err = Settings::load(Some(f.path()), &Env::new()).expect_err("refused");
        assert!(err.0[0].starts_with("auth.method"));
    }

    #[test]
    fn a_tenant_listed_twice_is_an_error_naming_both_positions() {
        let f = file(
            "[[tenants]]\nid = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n\
             [[tenants]]\nid = \"contoso.onmicrosoft.com\"\n\
             [[tenants]]\nid = \" 72F988BF-86F1-41AF-91AB-2D7CD011DB47 \"\nname = \"again\"\n",
        );
        let err = Settings::load(Some(f.path()), &Env::new()).expect_err("duplicate");
        assert_eq!(err.0.len(), 1, "{:?}", err.0);
        let line = &err.0[0];
        assert!(
            line.starts_with("tenants[2].id:")
                && line.contains("tenants[0].id")
                && line.contains("72f988bf-86f1-41af-91ab-2d7cd011db47"),
            "{line}"
        );
        // Distinct tenants pass, with ids trimmed and lower-cased.
        let f = file(
            "[[tenants]]\nid = \" 72F988BF-86F1-41AF-91AB-2D7CD011DB47\"\n[[tenants]]\nid = \"Contoso.onmicrosoft.com\"\n",
        );
        let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
        assert_eq!(
            s.tenant_ids(),
            [
                "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "contoso.onmicrosoft.com"
            ]
        );
    }

    #[test]
    fn azure_tenant_id_fills_in_only_an_empty_list_so_it_never_duplicates() {
        let id = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let f = file(&format!("[[tenants]]\nid = \"{id}\"\n"));
        let s = Settings::load(
            Some(f.path()),
            &env(&[("AZURE_TENANT_ID", &id.to_ascii_uppercase())]),
        )
        .expect("valid");
        assert_eq!(s.tenant_ids(), [id]);
        let s = Settings::load(None, &env(&[("AZURE_TENANT_ID", &id.to_ascii_uppercase())]))
            .expect("valid");
        assert_eq!(s.tenant_ids(), [id]);
    }

    #[test]
    fn a_syntax_error_on_a_secret_line_gives_line_and_column_but_never_the_line() {
        for (text, secret, line) in [
            // An unterminated string: the error is on the secret's own line.
            (
                "[auth]\nclient_id = \"c\"\nclient_secret = \"Sup3r-S3cret-Value\n",
                "Sup3r-S3cret-Value",
                3,
            ),
            // A bare (unquoted) value.
            (
                "[http]\napi_token = t0ken-without-quotes\n",
                "t0ken-without-quotes",
                2,
            ),
            // Dotted key at the top level, a stray character after the value.
            (
                "auth.client_secret = \"dotted-s3cret\" x\n",
                "dotted-s3cret",
                1,
            ),
        ] {
            let f = file(text);
            let err = Settings::load(Some(f.path()), &Env::new()).expect_err("syntax error");
            assert_eq!(err.0.len(), 1, "{:?}", err.0);
            let msg = &err.0[0];
            assert!(
                msg.contains(&format!("line {line}, column")),
                "{msg} (for {text:?})"
            );
            assert!(!msg.contains(secret), "{msg}");
            assert!(!err.to_string().contains(secret));
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn settings_from_text_in_memory_are_checked_like_a_file() {
        let s = Settings::from_toml_str(
            "[[tenants]]\nid = \"00000000-0000-0000-0000-0000000000aa\"\n[scan]\nconcurrency = 3\n",
            &env(&[]),
        )
        .expect("valid");
        assert_eq!(s.scan.concurrency, 3);
        let e = Settings::from_toml_str("[scan]\nconcurency = 3\n", &env(&[])).expect_err("typo");
        assert!(e.to_string().contains("scan.concurency"), "{e}");
    }

    #[test]
    fn values_of_secret_like_keys_are_never_echoed() {
        let f = file(
            "[http]\nrequire_token_for_reads = \"tok-3f9a8b7c6d5e\"\nmetrics_require_token = 17\n[auth]\nclient_secret_file = \"Xy8Q~s3cretValue.ABCdef_123\"\n",
        );
        let env = env(&[("MIAUDIT_HTTP__API_TOKEN", "")]);
        let e = Settings::load(Some(f.path()), &env).expect_err("invalid");
        let text = e.to_string();
        for secret in ["tok-3f9a8b7c6d5e", "Xy8Q~s3cretValue", "17"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("http.require_token_for_reads"), "{text}");
        assert!(text.contains("auth.client_secret_file"), "{text}");
    }

    #[test]
    fn a_secret_pasted_into_another_key_is_redacted_from_the_error() {
        let e = env(&[
            ("MIAUDIT_AUTH__CLIENT_SECRET", "env-s3cret-value"),
            ("MIAUDIT_SCAN__CONCURRENCY", "env-s3cret-value"),
            ("AZURE_CLIENT_SECRET", "azure-s3cret"),
            ("MIAUDIT_HTTP__LISTEN", "azure-s3cret"),
        ]);
        let f = file(
            "[http]\napi_token = \"file-t0ken\"\n[lifecycle]\nconfirm_after = \"file-t0ken\"\n",
        );
        let err = Settings::load(Some(f.path()), &e).expect_err("invalid");
        let text = err.0.join("\n");
        for key in ["scan.concurrency", "http.listen", "lifecycle.confirm_after"] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        for secret in ["env-s3cret-value", "azure-s3cret", "file-t0ken"] {
            assert!(!text.contains(secret), "{secret} in:\n{text}");
        }
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn line_and_column_count_characters_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("65536"), Some(65_536));
        assert_eq!(parse_size("64KiB"), Some(65_536));
        assert_eq!(parse_size("32 mib"), Some(32 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("16MB"), Some(16_000_000));
        for bad in [
            "",
            "MiB",
            "1.5MiB",
            "-1",
            "12 parsecs",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn response_size_cap_and_server_wait_have_defaults_bounds_and_overrides() {
        let s = Settings::load(None, &Env::new()).expect("defaults");
        assert_eq!(s.scan.max_response_bytes, 32 * 1024 * 1024);
        assert_eq!(s.scan.max_server_wait, Duration::from_secs(300));

        let f = file("[scan]\nmax_response_bytes = \"16MiB\"\nmax_server_wait = \"90s\"\n");
        let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
        assert_eq!(s.scan.max_response_bytes, 16 << 20);
        assert_eq!(s.scan.max_server_wait, Duration::from_secs(90));

        let f = file("[scan]\nmax_response_bytes = 65536\n");
        let s = Settings::load(
            Some(f.path()),
            &env(&[
                ("MIAUDIT_SCAN__MAX_RESPONSE_BYTES", "1048576"),
                ("MIAUDIT_SCAN__MAX_SERVER_WAIT", "0s"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.scan.max_response_bytes, 1 << 20, "the environment wins");
        assert_eq!(s.scan.max_server_wait, Duration::ZERO);

        for (text, key) in [
            ("max_response_bytes = 65535", "scan.max_response_bytes"),
            ("max_response_bytes = \"2GiB\"", "scan.max_response_bytes"),
            ("max_response_bytes = -1", "scan.max_response_bytes"),
            ("max_response_bytes = \"lots\"", "scan.max_response_bytes"),
            ("max_server_wait = \"forever\"", "scan.max_server_wait"),
            ("max_server_wait = -5", "scan.max_server_wait"),
        ] {
            let f = file(&format!("[scan]\n{text}\n"));
            let err = Settings::load(Some(f.path()), &Env::new()).expect_err(text);
            assert_eq!(err.0.len(), 1, "{text}: {:?}", err.0);
            assert!(err.0[0].starts_with(key), "{text}: {}", err.0[0]);
        }
        let f = file("[scan]\nmax_response_bytes = 1\n");
        let err = Settings::load(Some(f.path()), &Env::new()).expect_err("too small");
        assert!(err.0[0].contains("from 64KiB to 1GiB"), "{}", err.0[0]);
    }

    #[test]
    fn the_example_configuration_is_valid_and_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/miaudit.example.toml");
        let example = Settings::load(Some(&path), &Env::new()).expect("the example loads");
        let defaults = Settings::load(None, &Env::new()).expect("defaults");
        assert_eq!(
            format!("{:?}", example.scan),
            format!("{:?}", defaults.scan)
        );
        assert_eq!(
            format!("{:?}", example.http),
            format!("{:?}", defaults.http)
        );
        assert_eq!(format!("{:?}", example.log), format!("{:?}", defaults.log));
    }

    #[test]
    fn requiring_the_token_needs_one_configured() {
        let s = Settings::load(None, &Env::new()).expect("defaults");
        assert!(!s.http.require_token_for_reads && !s.http.metrics_require_token);
        let f = file("[http]\nrequire_token_for_reads = true\nmetrics_require_token = \"true\"\n");
        let err = Settings::load(Some(f.path()), &Env::new()).expect_err("no token");
        assert_eq!(err.0.len(), 2, "{:?}", err.0);
        assert!(err.0[0].starts_with("http.require_token_for_reads: needs"));
        assert!(err.0[1].starts_with("http.metrics_require_token: needs"));
        // The token from the environment counts.
        let s = Settings::load(
            Some(f.path()),
            &env(&[("MIAUDIT_HTTP__API_TOKEN", "tok3n-from-env")]),
        )
        .expect("valid");
        assert!(s.http.require_token_for_reads && s.http.metrics_require_token);
        let s = Settings::load(
            None,
            &env(&[
                ("MIAUDIT_HTTP__API_TOKEN", "tok3n-from-env"),
                ("MIAUDIT_HTTP__REQUIRE_TOKEN_FOR_READS", "true"),
            ]),
        )
        .expect("valid");
        assert!(s.http.require_token_for_reads && !s.http.metrics_require_token);
    }

    #[test]
    fn reads_are_exposed_only_off_loopback_without_the_token_requirement() {
        let http = |listen: &str, require: bool| HttpSettings {
            listen: listen.parse().expect("address"),
            api_token: None,
            require_token_for_reads: require,
            metrics_require_token: false,
        };
        assert!(!http("127.0.0.1:9464", false).reads_exposed());
        assert!(!http("[::1]:9464", false).reads_exposed());
        assert!(!http("[::ffff:127.0.0.1]:9464", false).reads_exposed());
        assert!(http("0.0.0.0:9464", false).reads_exposed());
        assert!(http("[::]:9464", false).reads_exposed());
        assert!(http("10.1.2.3:9464", false).reads_exposed());
        assert!(!http("0.0.0.0:9464", true).reads_exposed());
    }

    #[test]
    fn tenant_ids_are_guids_or_domains() {
        assert!(is_tenant_id("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(is_tenant_id("contoso.onmicrosoft.com"));
        assert!(!is_tenant_id("not a tenant"));
        assert!(!is_tenant_id("../etc"));
    }
}
