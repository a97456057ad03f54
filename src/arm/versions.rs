//! Providers and api-versions: which versions a resource type takes (the providers API, once per
//! namespace and scan, shared by concurrent checks), the newest stable one to read with, the newest of
//! any kind to confirm an absence, and the lists ARM gives when it refuses a version.

use super::{ArmClient, Check, PROVIDERS_API_VERSION};
use crate::azure::Api;
use crate::azure::http::Call;
use crate::domain::{Answer, ResourceId, SubscriptionId, TenantId};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Provider {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_types: Vec<ProviderType>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProviderType {
    resource_type: String,
    #[serde(default)]
    api_versions: Vec<String>,
}

/// Resource type (lower-case) -> api versions the providers API lists.
pub(super) type ProviderTypes = HashMap<String, Vec<String>>;

/// One namespace's lookup: the first caller fetches, concurrent callers wait for its result (no lock is
/// held across the network); `None` inside when discovery failed.
pub(super) type ProviderLookup = Arc<tokio::sync::OnceCell<Option<Arc<ProviderTypes>>>>;

/// Newest stable version of a list, or the newest of any kind when none is stable.
pub fn newest_stable(versions: &[String]) -> Option<String> {
    versions
        .iter()
        .filter(|v| is_api_version(v) && !v.to_ascii_lowercase().contains("preview"))
        .max()
        .cloned()
        .or_else(|| newest(versions))
}

/// Newest version of any kind, previews included: some resource types report `identity` only there.
pub fn newest(versions: &[String]) -> Option<String> {
    versions.iter().filter(|v| is_api_version(v)).max().cloned()
}

/// `yyyy-mm-dd` with an optional `-suffix` (`-preview`, `-beta`, ...): anything else from a providers
/// list or an error message is not put into a URL.
fn is_api_version(v: &str) -> bool {
    let b = v.as_bytes();
    v.len() <= 40
        && b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && (b.len() == 10
            || (b[10] == b'-'
                && b[11..]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'-')))
}

/// The versions an ARM 400 lists: "... The supported api-versions are '2015-01-01-preview, ...,
/// 2024-10-23'." (capture in docs/azure-behaviour.md §4; ARM API guidelines "UnsupportedApiVersionValue").
pub fn versions_in_message(message: &str) -> Vec<String> {
    let lower = message.to_ascii_lowercase();
    let Some(at) = lower.find("supported api-versions are") else {
        return Vec::new();
    };
    let rest = &message[at..];
    let Some(open) = rest.find('\'') else {
        return Vec::new();
    };
    let rest = &rest[open + 1..];
    let close = rest.find('\'').unwrap_or(rest.len());
    rest[..close]
        .split(',')
        .map(str::trim)
        .filter(|v| v.len() >= 10 && v.as_bytes()[..4].iter().all(u8::is_ascii_digit))
        .map(str::to_owned)
        .collect()
}

/// The api-versions of a type, as far as a check knows them.
pub(super) struct Versions {
    /// Where the version to read is chosen from (its newest stable).
    pub(super) read_from: Vec<String>,
    /// The newest version of any kind, previews included.
    pub(super) newest: Option<String>,
    /// Whether `newest` comes from a complete list: the provider's, or ARM's refusal for this resource.
    pub(super) complete: bool,
}

/// The versions ARM lists when it refuses the one asked for (400 `NoRegisteredProviderFound`,
/// `InvalidApiVersionParameter`, `UnsupportedApiVersionValue`): only from ARM (its request id) and only
/// when the message names the version that was sent, so a proxy's or another request's list is never
/// taken for this resource's.
pub(super) fn refused_versions(check: &Check, sent: &str) -> Option<Vec<String>> {
    match &check.answer {
        Answer::Error {
            status: 400,
            code: Some(code),
            message: Some(message),
        } if check.request_id.is_some()
            && message.contains(sent)
            && [
                "NoRegisteredProviderFound",
                "InvalidApiVersionParameter",
                "UnsupportedApiVersionValue",
            ]
            .iter()
            .any(|c| code.eq_ignore_ascii_case(c)) =>
        {
            Some(versions_in_message(message))
        }
        _ => None,
    }
}

impl ArmClient {
    /// Resource types and their api versions for `namespace`, from the subscription-level providers API
    /// (falling back to the tenant-level one, RES-SPEC `GetNamedProviderAtTenant.json`). Cached; one
    /// request however many checks ask at once.
    pub(super) async fn provider_versions(
        &self,
        tenant: &TenantId,
        namespace: &str,
        subscription: Option<&SubscriptionId>,
    ) -> Option<Arc<ProviderTypes>> {
        let lookup = self
            .providers
            .lock()
            .entry(namespace.to_ascii_lowercase())
            .or_default()
            .clone();
        lookup
            .get_or_init(|| self.lookup_provider(tenant, namespace, subscription))
            .await
            .clone()
    }

    pub(super) async fn lookup_provider(
        &self,
        tenant: &TenantId,
        namespace: &str,
        subscription: Option<&SubscriptionId>,
    ) -> Option<Arc<ProviderTypes>> {
        let mut urls = Vec::new();
        if let Some(s) = subscription {
            urls.extend(self.url(
                &["subscriptions", s.as_str(), "providers", namespace],
                PROVIDERS_API_VERSION,
            ));
        }
        urls.extend(self.url(&["providers", namespace], PROVIDERS_API_VERSION));
        for url in &urls {
            let call = Call::get(Api::Arm, tenant.as_str(), url);
            match self
                .http
                .json::<Provider>(&call, "a resource provider")
                .await
            {
                // Only ARM's own answer about this namespace: a gateway's `{}` or another namespace's
                // list would make "the newest version there is" a lie.
                Ok((p, reply))
                    if reply.arm_request_id().is_some()
                        && p.namespace
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(namespace)) =>
                {
                    return Some(Arc::new(
                        p.resource_types
                            .into_iter()
                            .map(|t| (t.resource_type.to_ascii_lowercase(), t.api_versions))
                            .collect(),
                    ));
                }
                Ok(_) => {
                    tracing::debug!(namespace, "provider lookup answered with something else");
                }
                Err(e) => {
                    tracing::debug!(namespace, error = %e, "provider lookup failed");
                }
            }
        }
        None
    }

    pub(super) fn type_key(resource: &ResourceId) -> String {
        format!(
            "{}/{}",
            resource.namespace().to_ascii_lowercase(),
            resource.type_path().to_ascii_lowercase()
        )
    }

    /// The api-versions of the resource's type: the ones to choose a version to read from (a list ARM
    /// gave when it refused a version, which is known to work, else the provider's), the provider's list
    /// as read this scan (the only one that says which version is the newest there is; a list learnt from
    /// another resource's refusal names the versions of that resource's location only), or neither.
    pub(super) async fn api_versions(
        &self,
        tenant: &TenantId,
        resource: &ResourceId,
        provider_subscription: Option<&SubscriptionId>,
    ) -> Result<Versions, String> {
        let learnt = self.learnt.lock().get(&Self::type_key(resource)).cloned();
        let provided = self
            .provider_versions(tenant, resource.namespace(), provider_subscription)
            .await;
        let listed = provided.as_ref().and_then(|types| {
            types
                .get(&resource.type_path().to_ascii_lowercase())
                .filter(|v| newest_stable(v).is_some())
                .cloned()
        });
        match (learnt, listed) {
            (learnt, Some(listed)) => Ok(Versions {
                read_from: learnt.unwrap_or_else(|| listed.clone()),
                newest: newest(&listed),
                complete: true,
            }),
            (Some(learnt), None) => Ok(Versions {
                newest: newest(&learnt),
                read_from: learnt,
                complete: false,
            }),
            (None, None) if provided.is_none() => Err(format!(
                "api-versions of {} could not be discovered",
                resource.namespace()
            )),
            (None, None) => Err(format!(
                "provider {} does not list type {}",
                resource.namespace(),
                resource.type_path()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_stable_skips_previews() {
        let v: Vec<String> = [
            "2015-05-01",
            "2024-01-01-preview",
            "2023-03-01",
            "2018-01-01",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(newest_stable(&v).as_deref(), Some("2023-03-01"));
        let p = vec!["2020-01-01-preview".to_owned()];
        assert_eq!(newest_stable(&p).as_deref(), Some("2020-01-01-preview"));
        assert_eq!(newest_stable(&[]), None);
    }

    #[test]
    fn versions_are_read_from_no_registered_provider_message() {
        let m = "No registered resource provider found for location 'swedencentral' and API version '2021-06-22' for type 'automationAccounts/jobs'. The supported api-versions are '2015-01-01-preview, 2015-10-31, 2024-10-23'. The supported locations are 'westus'.";
        assert_eq!(
            versions_in_message(m),
            vec!["2015-01-01-preview", "2015-10-31", "2024-10-23"]
        );
        assert!(versions_in_message("nothing here").is_empty());
    }
}
