//! Allowlist: orphans an operator has accepted (a known, ticketed or harmless principal), matched by
//! object id, resource-id pattern, subscription or tenant, each with a reason, an owner and an optional
//! expiry. A suppressed finding is kept and counted (`state = "suppressed"`), never hidden; it is not
//! notified, exported or alerted on; when the suppression expires the finding is active again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Suppression {
    /// `config-<n>` for the n-th `[[suppressions]]` table, a UUID for one made through the API.
    pub id: String,
    pub tenant_id: Option<String>,
    pub subscription_id: Option<String>,
    pub object_id: Option<String>,
    /// A resource id, `*` matching any run of characters; compared case-insensitively.
    pub resource_id: Option<String>,
    pub reason: String,
    pub owner: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// `config` or `api`.
    pub source: String,
}

impl Suppression {
    /// In force at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }

    /// Whether it covers an identity: every selector it has must match (at least one is required
    /// where suppressions are made).
    pub fn matches(
        &self,
        tenant: &str,
        subscription: Option<&str>,
        object: &str,
        resource_id: Option<&str>,
    ) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref()
                .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w.trim())))
        };
        let any = self.tenant_id.is_some()
            || self.subscription_id.is_some()
            || self.object_id.is_some()
            || self.resource_id.is_some();
        any && eq(&self.tenant_id, Some(tenant))
            && eq(&self.subscription_id, subscription)
            && eq(&self.object_id, Some(object))
            && self.resource_id.as_deref().is_none_or(|p| {
                resource_id.is_some_and(|r| glob(&p.to_ascii_lowercase(), &r.to_ascii_lowercase()))
            })
    }
}

/// `*` matches any run of characters (also `/`); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(resource: Option<&str>, sub: Option<&str>) -> Suppression {
        Suppression {
            id: "x".into(),
            tenant_id: None,
            subscription_id: sub.map(Into::into),
            object_id: None,
            resource_id: resource.map(Into::into),
            reason: "r".into(),
            owner: "o".into(),
            expires_at: None,
            source: "config".into(),
        }
    }

    #[test]
    fn patterns_and_selectors() {
        assert!(glob(
            "/subscriptions/*/resourcegroups/sandbox-*",
            "/subscriptions/a/resourcegroups/sandbox-1"
        ));
        assert!(!glob(
            "/subscriptions/*/resourcegroups/sandbox-*",
            "/subscriptions/a/resourcegroups/prod"
        ));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "abc") && glob("a*b*c", "aXbYc") && !glob("a*b*c", "acb"));
        assert!(!glob("ab*ba", "aba"), "prefix and suffix may not overlap");
        let r = s(Some("/subscriptions/*/resourceGroups/Sandbox/*"), None);
        assert!(r.matches(
            "t",
            Some("s"),
            "o",
            Some("/subscriptions/S/resourcegroups/sandbox/providers/x/y/z")
        ));
        assert!(
            !r.matches("t", Some("s"), "o", None),
            "no resource id: no match"
        );
        let both = s(Some("*"), Some("sub-1"));
        assert!(both.matches("t", Some("SUB-1"), "o", Some("/x")));
        assert!(
            !both.matches("t", Some("sub-2"), "o", Some("/x")),
            "every selector must match"
        );
        assert!(
            !s(None, None).matches("t", None, "o", None),
            "no selector matches nothing"
        );
        let mut e = s(None, Some("s"));
        let now = Utc::now();
        e.expires_at = Some(now);
        assert!(!e.active(now) && e.active(now - chrono::Duration::seconds(1)));
    }
}
