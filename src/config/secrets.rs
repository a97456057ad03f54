//! Secrets in the configuration: the [`Secret`] type, and keeping secret values out of every message.

use super::Env;
use secrecy::ExposeSecret;
use std::path::Path;

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
pub(super) const SECRET_KEYS: &[(&str, &str)] = &[("auth", "client_secret"), ("http", "api_token")];

/// Environment variables that carry a secret besides the `MIAUDIT_` overrides of [`SECRET_KEYS`].
pub(super) const SECRET_ENV: &[&str] = &["AZURE_CLIENT_SECRET", "IDENTITY_HEADER"];

/// Secrets shorter than this are not scrubbed out of messages: replacing every "t" of a message would
/// make it unreadable, and such a value protects nothing anyway.
pub(super) const MIN_SCRUBBED: usize = 4;

/// Replaces every occurrence of each secret (also in its `{:?}`-escaped form) in `lines`.
pub(super) fn scrub(mut lines: Vec<String>, secrets: &[String]) -> Vec<String> {
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
pub(super) fn env_secrets(env: &Env) -> Vec<String> {
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
pub(super) fn secret_like(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "token", "password"]
        .iter()
        .any(|w| key.contains(w))
}

/// A configured value as an error message may show it: never the value of a key whose name says
/// secret, token or password (`require_token_for_reads = "<the token>"` is a typo, not a boolean).
pub(super) fn shown(key: &str, v: &dyn std::fmt::Display) -> String {
    if secret_like(key) {
        "a value (not shown)".into()
    } else {
        v.to_string()
    }
}

/// Values of lines of a file that does not parse that look like a secret's `key = value`: the raw value
/// and the value without its quotes or a trailing comment, each a candidate to scrub.
pub(super) fn secrets_in_text(text: &str) -> Vec<String> {
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
pub(super) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// A TOML syntax error as one line: where and what, never the source line (it may be the secret's).
pub(super) fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
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

/// Every secret value configured (file and environment), to scrub out of whatever a message echoes.
pub(super) fn configured_secrets(root: &toml::Table, env: &Env) -> Vec<String> {
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
    // Each tenant's own client secret.
    let tenant_secrets = root
        .get("tenants")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("auth")?.get("client_secret")?.as_str());
    secrets.extend(tenant_secrets.map(str::to_owned));
    // Each webhook's URL (its credential) and signing secret.
    let webhook_secrets = root
        .get("notify")
        .and_then(|n| n.get("webhooks"))
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|w| ["url", "secret"].map(|k| w.get(k).and_then(toml::Value::as_str)))
        .flatten();
    secrets.extend(webhook_secrets.map(str::to_owned));
    secrets
}
