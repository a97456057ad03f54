//! `[notify]` and its `[[notify.webhooks]]`: where notifications of new and resolved orphans go.

use super::read::Reader;
use super::secrets::Secret;
use crate::domain::{EventType, SinkKind, Subscriber};
use std::time::Duration;

/// Default of `[notify] max_attempts`: the attempts before a delivery is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub webhooks: Vec<WebhookSettings>,
    /// Attempts of one delivery before it is dead (kept, counted, no longer tried).
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles it, up to `retry_max_delay`, with jitter.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// Where people reach this daemon's page and export (digest links); default `http://<listen>`.
    pub public_url: Option<String>,
}

impl NotifySettings {
    /// The sinks as the outbox sees them (no URL, no secret).
    pub fn subscribers(&self) -> Vec<Subscriber> {
        self.webhooks
            .iter()
            .map(|w| Subscriber {
                sink: w.name.clone(),
                kind: w.kind,
                events: w.events.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The label of its deliveries and metrics: `name`, else `webhook-<n>` by position from 1.
    pub name: String,
    /// A secret: webhook URLs carry their credential in the path or query.
    pub url: Secret,
    pub kind: SinkKind,
    /// HMAC-SHA256 key of the json kind's `X-Miaudit-Signature`.
    pub secret: Option<Secret>,
    pub events: Vec<EventType>,
}

/// `[notify]`.
pub(super) fn read_notify(r: &mut Reader<'_>, secrets: &mut Vec<String>) -> NotifySettings {
    let max_attempts = r
        .int("notify", "max_attempts", 1, 1000)
        .map_or(DEFAULT_MAX_ATTEMPTS, |n| n as u32);
    let retry_base_delay = r
        .duration("notify", "retry_base_delay")
        .unwrap_or(Duration::from_secs(10));
    let retry_max_delay = r
        .duration("notify", "retry_max_delay")
        .unwrap_or(Duration::from_secs(3600));
    if retry_max_delay > Duration::from_secs(7 * 86_400) {
        r.errors.push("notify.retry_max_delay: at most 7d".into());
    }
    if retry_base_delay.is_zero() || retry_base_delay > retry_max_delay {
        r.errors.push(
            "notify.retry_base_delay: must be more than 0s and at most notify.retry_max_delay"
                .into(),
        );
    }
    let public_url = r.string("notify", "public_url").map(|u| {
        let mut errors = Vec::new();
        let u = super::read::check_endpoint("notify.public_url", &u, &mut errors);
        r.errors.extend(errors);
        u
    });
    let mut webhooks: Vec<WebhookSettings> = Vec::new();
    match r.get("notify", "webhooks").cloned() {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (n, item) in items.iter().enumerate() {
                match item.as_table() {
                    Some(t) => {
                        if let Some(w) = read_webhook(r, n, t, secrets) {
                            if webhooks.iter().any(|o| o.name == w.name) {
                                r.errors.push(format!(
                                    "notify.webhooks[{n}].name: {:?} names another webhook too; each needs its own name",
                                    w.name
                                ));
                            }
                            webhooks.push(w);
                        }
                    }
                    None => r
                        .errors
                        .push(format!("notify.webhooks[{n}]: expected a table")),
                }
            }
        }
        Some(_) => r
            .errors
            .push("notify.webhooks: expected an array of [[notify.webhooks]] tables".into()),
    }
    NotifySettings {
        webhooks,
        max_attempts,
        retry_base_delay,
        retry_max_delay,
        public_url,
    }
}

fn read_webhook(
    r: &mut Reader<'_>,
    n: usize,
    t: &toml::Table,
    secrets: &mut Vec<String>,
) -> Option<WebhookSettings> {
    let key = |k: &str| format!("notify.webhooks[{n}].{k}");
    let string = |r: &mut Reader<'_>, k: &str| match t.get(k) {
        None => None,
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            r.errors.push(format!(
                "{}: expected a string, found {}",
                key(k),
                other.type_str()
            ));
            None
        }
    };
    let name = match string(r, "name") {
        None => format!("webhook-{}", n + 1),
        Some(s)
            if !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            s
        }
        Some(s) => {
            r.errors.push(format!(
                "{}: {s:?} must be 1 to 64 letters, digits, '-', '_' or '.' (it labels metrics)",
                key("name")
            ));
            return None;
        }
    };
    let url = secret_value(r, t, n, "url", "url_file", secrets);
    let kind = match string(r, "kind").as_deref() {
        None => SinkKind::Json,
        Some(k) => match SinkKind::parse(k) {
            Some(k) => k,
            None => {
                r.errors.push(format!(
                    "{}: {k:?} is not one of json, slack, teams",
                    key("kind")
                ));
                return None;
            }
        },
    };
    let secret = secret_value(r, t, n, "secret", "secret_file", secrets);
    if secret.is_some() && kind != SinkKind::Json {
        r.errors.push(format!(
            "{}: only a json webhook is signed ({} webhooks carry their credential in the URL)",
            key("secret"),
            kind.as_str()
        ));
    }
    let events = match t.get("events") {
        None => EventType::ALL.to_vec(),
        Some(toml::Value::Array(items)) => {
            let mut events = Vec::new();
            for e in items {
                match e.as_str().and_then(EventType::parse) {
                    Some(e) if !events.contains(&e) => events.push(e),
                    Some(_) => {}
                    None => r.errors.push(format!(
                        "{}: {e} is not one of \"confirmed\", \"resolved\"",
                        key("events")
                    )),
                }
            }
            if events.is_empty() {
                r.errors.push(format!(
                    "{}: names no event; leave it out for both",
                    key("events")
                ));
            }
            events
        }
        Some(_) => {
            r.errors.push(format!(
                "{}: expected a list such as [\"confirmed\", \"resolved\"]",
                key("events")
            ));
            return None;
        }
    };
    let Some(url) = url else {
        r.errors
            .push(format!("{}: missing (set url or url_file)", key("url")));
        return None;
    };
    if let Some(problem) = url_problem(url.expose()) {
        // Never the URL itself: it is the sink's credential.
        r.errors.push(format!("{}: {problem}", key("url")));
    }
    Some(WebhookSettings {
        name,
        url,
        kind,
        secret,
        events,
    })
}

/// A secret given inline (`key`) or in a file (`file_key`), not both; blank counts as unset.
fn secret_value(
    r: &mut Reader<'_>,
    t: &toml::Table,
    n: usize,
    key: &str,
    file_key: &str,
    secrets: &mut Vec<String>,
) -> Option<Secret> {
    let inline = match t.get(key) {
        None => None,
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            r.errors.push(format!(
                "notify.webhooks[{n}].{key}: expected a string, found a value (not shown)"
            ));
            None
        }
    };
    let file = t.get(file_key).and_then(toml::Value::as_str);
    if inline.is_some() && file.is_some() {
        r.errors.push(format!(
            "notify.webhooks[{n}].{file_key}: set either {key} or {file_key}, not both"
        ));
    }
    let from_file = file.and_then(|f| match std::fs::read_to_string(f) {
        Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_owned()),
        Err(e) => {
            r.errors.push(format!(
                "notify.webhooks[{n}].{file_key}: cannot read the file it names: {e}"
            ));
            None
        }
    });
    let v = inline.or(from_file).filter(|s| !s.trim().is_empty())?;
    secrets.push(v.clone());
    Some(Secret::new(v))
}

/// What is wrong with a webhook URL, in words that do not repeat it.
fn url_problem(u: &str) -> Option<String> {
    let parsed = match url::Url::parse(u.trim()) {
        Ok(p) => p,
        Err(e) => return Some(format!("is not a URL ({e})")),
    };
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Some("has no host".into()),
    };
    match parsed.scheme() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some("must use https (http is allowed only for loopback addresses)".into()),
        _ => Some("must be an https URL".into()),
    }
}

/// `[[suppressions]]`: the allowlist of the configuration, each with at least one selector, a reason
/// and an owner; `expires` is an RFC 3339 time or a date (the end of that day is not included: a date
/// means midnight UTC at its start).
pub(super) fn read_suppressions(r: &mut Reader<'_>) -> Vec<crate::domain::Suppression> {
    let mut out = Vec::new();
    let Some(v) = r.root.get("suppressions").cloned() else {
        return out;
    };
    let Some(items) = v.as_array() else {
        r.errors
            .push("suppressions: expected an array of [[suppressions]] tables".into());
        return out;
    };
    for (n, item) in items.iter().enumerate() {
        let Some(t) = item.as_table() else {
            r.errors
                .push(format!("suppressions[{n}]: expected a table"));
            continue;
        };
        let mut get = |k: &str| match t.get(k) {
            None => None,
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(_) => {
                r.errors.push(format!(
                    "suppressions[{n}].{k}: expected a non-empty string"
                ));
                None
            }
        };
        let s = crate::domain::Suppression {
            id: format!("config-{}", n + 1),
            tenant_id: get("tenant_id").map(|v| v.to_ascii_lowercase()),
            subscription_id: get("subscription_id").map(|v| v.to_ascii_lowercase()),
            object_id: get("object_id").map(|v| v.to_ascii_lowercase()),
            resource_id: get("resource_id"),
            reason: get("reason").unwrap_or_default(),
            owner: get("owner").unwrap_or_default(),
            expires_at: None,
            source: "config".into(),
        };
        let expires = get("expires");
        let mut s = s;
        if let Some(e) = expires {
            match parse_expiry(&e) {
                Some(at) => s.expires_at = Some(at),
                None => r.errors.push(format!(
                    "suppressions[{n}].expires: {e:?} is not a date (2027-01-31) or an RFC 3339 time"
                )),
            }
        }
        if s.tenant_id.is_none()
            && s.subscription_id.is_none()
            && s.object_id.is_none()
            && s.resource_id.is_none()
        {
            r.errors.push(format!(
                "suppressions[{n}]: needs at least one of object_id, resource_id, subscription_id, tenant_id"
            ));
        }
        for (k, v) in [("reason", &s.reason), ("owner", &s.owner)] {
            if v.is_empty() {
                r.errors.push(format!(
                    "suppressions[{n}].{k}: missing (every suppression says why and who owns it)"
                ));
            }
        }
        out.push(s);
    }
    out
}

/// An expiry: an RFC 3339 time, or a date (its midnight, UTC).
pub fn parse_expiry(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked_without_being_repeated() {
        assert_eq!(
            url_problem("https://hooks.example.com/services/T/B/X"),
            None
        );
        assert_eq!(url_problem("http://127.0.0.1:9/hook"), None);
        let p = url_problem("http://hooks.example.com/services/SECRETPATH").expect("refused");
        assert!(!p.contains("SECRETPATH"), "{p}");
        assert!(url_problem("ftp://x.example/").is_some());
        assert!(url_problem("not a url").is_some());
    }
}
