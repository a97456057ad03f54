//! The bodies sinks receive. A json sink gets the event document as the outbox holds it; a Slack or Teams
//! sink gets one message per scan rendered from the digest the outbox holds (its counts and first
//! findings), with links to the page and the export. Rendering is deterministic, so a retried digest is
//! the same message.
//!
//! Slack: an incoming webhook takes `{"text", "blocks"}` (Block Kit; a section's text is limited to
//! 3,000 characters, and `&`, `<`, `>` are markup and escaped). Teams: a Workflows webhook ("When a Teams
//! webhook request is received") takes a message whose attachment is an Adaptive Card
//! (`application/vnd.microsoft.card.adaptive`), which the flow posts to the channel.

use serde_json::{Value, json};

/// The digest of one scan as the outbox stores it.
struct Digest<'a> {
    confirmed: u64,
    resolved: u64,
    findings: &'a [Value],
}

impl<'a> Digest<'a> {
    fn of(body: &'a Value) -> Self {
        Self {
            confirmed: body["confirmed"].as_u64().unwrap_or(0),
            resolved: body["resolved"].as_u64().unwrap_or(0),
            findings: body["findings"].as_array().map_or(&[], Vec::as_slice),
        }
    }

    fn title(&self) -> String {
        let mut parts = Vec::new();
        if self.confirmed > 0 {
            parts.push(format!(
                "{} new orphaned managed {}",
                self.confirmed,
                if self.confirmed == 1 {
                    "identity"
                } else {
                    "identities"
                }
            ));
        }
        if self.resolved > 0 {
            parts.push(format!("{} resolved", self.resolved));
        }
        format!("miaudit: {}", parts.join(", "))
    }

    fn more(&self) -> Option<String> {
        let total = self.confirmed + self.resolved;
        let shown = self.findings.len() as u64;
        (total > shown).then(|| format!("… and {} more: see the export", total - shown))
    }
}

/// One finding of a digest as a line of plain words.
fn line(f: &Value) -> (String, String) {
    let s = |k: &str| f[k].as_str().unwrap_or("").to_owned();
    let what = if s("type") == "orphan.resolved" {
        format!("resolved ({})", s("resolution"))
    } else {
        s("reason")
    };
    (
        format!("{} ({})", s("display_name"), s("object_id")),
        format!(
            "{what}; tenant {}; {}",
            s("tenant_id"),
            f["resource_id"].as_str().unwrap_or("no resource id")
        ),
    )
}

/// Slack's markup characters, escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook message.
pub fn slack(digest: &Value, base: &str) -> Value {
    let d = Digest::of(digest);
    let mut text = String::new();
    for f in d.findings {
        let (who, what) = line(f);
        let next = format!("• *{}*: {}\n", slack_escape(&who), slack_escape(&what));
        // A section's text holds at most 3,000 characters.
        if text.chars().count() + next.chars().count() > 2900 {
            break;
        }
        text.push_str(&next);
    }
    if let Some(more) = d.more() {
        text.push_str(&more);
    }
    let title = d.title();
    json!({
        "text": title,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text.trim_end()}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                "<{base}/|Open miaudit> · <{base}/api/v1/export?format=csv|Export (CSV)> · <{base}/api/v1/export?format=ticket|Ticket text>"
            )}]}
        ]
    })
}

/// Adaptive Cards' TextBlocks read a Markdown subset: its markup characters in Azure's text are
/// escaped, so a name cannot become a link.
fn teams_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '[' | ']' | '(' | ')' | '*' | '_' | '`' | '#' | '>' | '-' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Teams Workflows-webhook message carrying an Adaptive Card.
pub fn teams(digest: &Value, base: &str) -> Value {
    let d = Digest::of(digest);
    let mut body = vec![json!({
        "type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true, "text": d.title()
    })];
    let facts: Vec<Value> = d
        .findings
        .iter()
        .map(|f| {
            let (who, what) = line(f);
            json!({"title": teams_escape(&who), "value": teams_escape(&what)})
        })
        .collect();
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    if let Some(more) = d.more() {
        body.push(json!({"type": "TextBlock", "wrap": true, "isSubtle": true, "text": more}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": [
                    {"type": "Action.OpenUrl", "title": "Open miaudit", "url": format!("{base}/")},
                    {"type": "Action.OpenUrl", "title": "Export (CSV)", "url": format!("{base}/api/v1/export?format=csv")}
                ]
            }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: usize) -> Value {
        let findings: Vec<Value> = (0..n.min(10))
            .map(|i| {
                json!({"type": "orphan.confirmed", "display_name": format!("vm-<{i}>"), "object_id": format!("o{i}"),
                       "tenant_id": "t1", "reason": "resource_not_found", "resource_id": "/subscriptions/s/x"})
            })
            .collect();
        json!({"scan_id": "s", "confirmed": n, "resolved": 0, "findings": findings})
    }

    #[test]
    fn slack_digest_counts_escapes_and_links() {
        let m = slack(&digest(12), "https://miaudit.example");
        assert_eq!(m["text"], "miaudit: 12 new orphaned managed identities");
        let section = m["blocks"][1]["text"]["text"].as_str().expect("text");
        assert!(section.contains("vm-&lt;0&gt;"), "{section}");
        assert!(
            section.ends_with("… and 2 more: see the export"),
            "{section}"
        );
        assert_eq!(section.matches("• ").count(), 10);
        let links = m["blocks"][2]["elements"][0]["text"]
            .as_str()
            .expect("links");
        assert!(links.contains("<https://miaudit.example/api/v1/export?format=csv|Export (CSV)>"));
    }

    #[test]
    fn teams_digest_is_an_adaptive_card() {
        let m = teams(&digest(1), "http://127.0.0.1:9464");
        assert_eq!(m["type"], "message");
        let a = &m["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(
            a["content"]["body"][0]["text"],
            "miaudit: 1 new orphaned managed identity"
        );
        assert_eq!(
            a["content"]["body"][1]["facts"].as_array().map(Vec::len),
            Some(1)
        );
    }
}
