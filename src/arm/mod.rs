//! Resolve: what Azure Resource Manager says about the resources identities belong to.
//!
//! - `GET /subscriptions?api-version=2022-12-01`, paged by `nextLink`: which subscriptions these
//!   credentials can see (RES-SPEC `subscriptions.json`). Absence is not proof of deletion.
//! - Azure Resource Graph, `POST /providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01`,
//!   `resultFormat: objectArray`, `$top` 1000, paged by `$skipToken` (its presence is the continuation
//!   signal), paced by `x-ms-user-quota-remaining` / `x-ms-user-quota-resets-after` (ARG-SPEC,
//!   ARG paging-results, ARG-THR). Bulk and eventually consistent: it says "healthy", and is the second
//!   witness of an absent identity or of a principal carried by another resource; never an orphan alone.
//! - An ARM `GET {resourceId}?api-version=...` of each candidate, read with the newest stable version the
//!   providers API lists (read once per namespace and scan) or that ARM's refusal of a version lists; an
//!   identity absent from the body is read again with the newest version of any kind, previews
//!   included (docs/azure-behaviour.md §4). This is the authoritative answer.
//!
//! Files: `resource_graph` (the bulk query, its rows and its quota pacer), `versions` (providers and
//! api-versions), `check` (the ARM GET of one resource and what its answer shows).

mod check;
mod resource_graph;
mod versions;

#[cfg(test)]
pub(crate) use resource_graph::rows_for_fuzz;
pub use resource_graph::{ArgHit, ArgTable, identity_query, is_queryable_type, principal_of};
pub use versions::{newest, newest_stable, versions_in_message};

use crate::azure::Api;
use crate::azure::AzureError;
use crate::azure::http::{AzureHttp, Call};
use crate::azure::transport::follow_link;
use crate::domain::{Answer, SubscriptionId, TenantId};
use parking_lot::Mutex;
use resource_graph::Pacer;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Instant;
use versions::ProviderLookup;

pub const SUBSCRIPTIONS_API_VERSION: &str = "2022-12-01";
pub const PROVIDERS_API_VERSION: &str = "2021-04-01";
pub const RESOURCE_GRAPH_API_VERSION: &str = "2024-04-01";
/// An api-version no resource provider accepts, sent only to learn the supported ones from the refusal.
pub const PROBE_API_VERSION: &str = "1900-01-01";
/// Rows per Resource Graph page: the documented maximum (ARG work-with-data).
pub const ARG_PAGE_SIZE: u32 = 1000;
/// Subscriptions per Resource Graph request: the REST API's documented batch (ARG troubleshoot).
pub const ARG_SUBSCRIPTION_BATCH: usize = 1000;
/// Principals named in one Resource Graph query for their role assignments, as Resource Graph's
/// guidance asks.
pub const ROLE_QUERY_PRINCIPALS: usize = 100;

/// A subscription as `GET /subscriptions` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub subscription_id: SubscriptionId,
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage<T> {
    value: Vec<T>,
    #[serde(default)]
    next_link: Option<String>,
}

pub struct ArmClient {
    http: AzureHttp,
    /// Root such as `https://management.azure.com`.
    endpoint: String,
    pacer: Mutex<Pacer>,
    /// Per namespace (lower-case). Failed lookups are forgotten when the next scan begins.
    providers: Mutex<HashMap<String, ProviderLookup>>,
    /// api-versions learnt from `NoRegisteredProviderFound`, per `namespace/type` (lower-case).
    learnt: Mutex<HashMap<String, Vec<String>>>,
    /// ARM reads left per subscription, as last announced, and when.
    arm_quota: Mutex<HashMap<String, (i64, Instant)>>,
}

/// ARM refills a subscription's read bucket at 25 per second (ARM-THR, 2025).
const ARM_REFILL_PER_S: f64 = 25.0;
/// Reads kept in reserve for requests already in flight when pacing.
const ARM_RESERVE: f64 = 10.0;

/// The result of an ARM check of one resource.
#[derive(Debug, Clone)]
pub struct Check {
    pub answer: Answer,
    pub request_id: Option<String>,
    pub correlation_request_id: Option<String>,
    pub checked_at: chrono::DateTime<chrono::Utc>,
}

/// A string value that says something (not empty, not blank), trimmed.
fn non_empty(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl ArmClient {
    pub fn new(http: AzureHttp, endpoint: &str) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            pacer: Mutex::new(Pacer::default()),
            providers: Mutex::new(HashMap::new()),
            learnt: Mutex::new(HashMap::new()),
            arm_quota: Mutex::new(HashMap::new()),
        }
    }

    /// Every subscription these credentials can see, by id.
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn fetch_subscriptions(
        &self,
        tenant: &TenantId,
    ) -> Result<HashMap<SubscriptionId, Subscription>, AzureError> {
        let mut url = format!(
            "{}/subscriptions?api-version={SUBSCRIPTIONS_API_VERSION}",
            self.endpoint
        );
        let mut out = HashMap::new();
        let mut pages = 0u32;
        loop {
            pages += 1;
            if pages > 10_000 {
                return Err(AzureError::Decode {
                    api: Api::Arm,
                    what: "a subscription list",
                    detail: "more than 10000 pages".into(),
                });
            }
            let call = Call::get(Api::Arm, tenant.as_str(), &url);
            let (page, _): (ListPage<Subscription>, _) =
                self.http.json(&call, "a subscription list").await?;
            for s in page.value {
                out.insert(s.subscription_id.clone(), s);
            }
            match page.next_link {
                Some(next) if !next.is_empty() => {
                    url = follow_link(&url, &next).ok_or(AzureError::ForeignLink {
                        api: Api::Arm,
                        link: next,
                    })?;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// A new scan begins: providers are looked up again (a failed lookup is retried, and a provider that
    /// shipped a new api-version since is seen: an absent identity is only believed when read with the
    /// newest one). One request per namespace and scan; concurrent checks share it.
    pub fn begin_scan(&self) {
        self.providers.lock().clear();
    }
}
