//! Reading the configuration: the schema of sections and keys, the unknown-key check and environment
//! overrides, value parsers (durations, sizes, endpoints, tenant ids) and the reader the sections use.

use super::secrets::shown;
use super::*;

/// The keys of `[auth]` (and of `[tenants.auth]`).
pub(super) const AUTH_KEYS: &[&str] = &[
    "method",
    "client_id",
    "client_secret",
    "client_secret_file",
    "certificate_path",
    "private_key_path",
    "send_certificate_chain",
    "federated_token_file",
    "imds_endpoint",
    "object_id",
    "mi_res_id",
];

/// The keys of `[notify]`.
pub(super) const NOTIFY_KEYS: &[&str] = &[
    "max_attempts",
    "retry_base_delay",
    "retry_max_delay",
    "public_url",
    "webhooks",
];

/// The keys of one `[[notify.webhooks]]` table.
pub(super) const WEBHOOK_KEYS: &[&str] = &[
    "name",
    "url",
    "url_file",
    "kind",
    "secret",
    "secret_file",
    "events",
];

/// The keys of one `[[suppressions]]` table.
pub(super) const SUPPRESSION_KEYS: &[&str] = &[
    "tenant_id",
    "subscription_id",
    "object_id",
    "resource_id",
    "reason",
    "owner",
    "expires",
];

/// Known sections and keys. `tenants` is an array of tables with `id` and `name`.
pub(super) const SCHEMA: &[(&str, &[&str])] = &[
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
    ("auth", AUTH_KEYS),
    ("database", &["url", "retain_scans"]),
    (
        "http",
        &[
            "listen",
            "api_token",
            "api_token_file",
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
            "max_concurrent_tenants",
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
    ("notify", NOTIFY_KEYS),
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
pub(super) fn check_endpoint(key: &str, v: &str, errors: &mut Vec<String>) -> String {
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
pub(super) fn show_size(n: u64) -> String {
    for (unit, f) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= f && n.is_multiple_of(f) {
            return format!("{}{unit}", n / f);
        }
    }
    n.to_string()
}

/// Reads typed values out of the merged table, collecting problems.
pub(super) struct Reader<'a> {
    pub(super) root: &'a toml::Table,
    pub(super) errors: Vec<String>,
}

impl Reader<'_> {
    pub(super) fn get(&self, section: &str, key: &str) -> Option<&toml::Value> {
        self.root.get(section)?.as_table()?.get(key)
    }

    pub(super) fn string(&mut self, section: &str, key: &str) -> Option<String> {
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

    pub(super) fn boolean(&mut self, section: &str, key: &str) -> Option<bool> {
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

    pub(super) fn int(&mut self, section: &str, key: &str, min: i64, max: i64) -> Option<i64> {
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

    pub(super) fn size(&mut self, section: &str, key: &str, min: u64, max: u64) -> Option<u64> {
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

    pub(super) fn duration(&mut self, section: &str, key: &str) -> Option<Duration> {
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

/// A GUID or a verified domain name: the two forms the token endpoint takes as `{tenant}`.
pub(super) fn is_tenant_id(s: &str) -> bool {
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

/// Unknown sections and keys of the file, one line each.
pub(super) fn unknown_keys(root: &toml::Table) -> Vec<String> {
    let mut errors = Vec::new();
    for (section, value) in root {
        if section == "suppressions" {
            // Read (and its shape checked) by `read_suppressions`; here only unknown keys.
            for (n, t) in value.as_array().into_iter().flatten().enumerate() {
                for k in t
                    .as_table()
                    .into_iter()
                    .flat_map(|t| t.keys())
                    .filter(|k| !SUPPRESSION_KEYS.contains(&k.as_str()))
                {
                    errors.push(format!("suppressions[{n}].{k}: unknown key"));
                }
            }
            continue;
        }
        if section == "tenants" {
            match value.as_array() {
                Some(items) => {
                    for (n, t) in items.iter().enumerate() {
                        match t.as_table() {
                            Some(t) => {
                                for k in t.keys().filter(|k| {
                                    !["id", "name", "auth", "cloud"].contains(&k.as_str())
                                }) {
                                    errors.push(format!("tenants[{n}].{k}: unknown key"));
                                }
                                match t.get("auth").map(toml::Value::as_table) {
                                    Some(Some(a)) => {
                                        for k in
                                            a.keys().filter(|k| !AUTH_KEYS.contains(&k.as_str()))
                                        {
                                            errors.push(format!(
                                                "tenants[{n}].auth.{k}: unknown key"
                                            ));
                                        }
                                    }
                                    Some(None) => {
                                        errors.push(format!("tenants[{n}].auth: expected a table"))
                                    }
                                    None => {}
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
                    if section == "notify"
                        && let Some(hooks) = t.get("webhooks").and_then(toml::Value::as_array)
                    {
                        for (n, h) in hooks.iter().enumerate() {
                            for k in h
                                .as_table()
                                .into_iter()
                                .flat_map(|h| h.keys())
                                .filter(|k| !WEBHOOK_KEYS.contains(&k.as_str()))
                            {
                                errors.push(format!("notify.webhooks[{n}].{k}: unknown key"));
                            }
                        }
                    }
                }
            },
        }
    }
    errors
}

/// Applies the `MIAUDIT_<SECTION>__<KEY>` overrides to the file's table; unknown keys are errors.
pub(super) fn apply_env_overrides(root: &mut toml::Table, env: &Env) -> Vec<String> {
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
