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
