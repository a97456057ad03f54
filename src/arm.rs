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

use crate::azure::http::{AzureHttp, Call};
use crate::azure::transport::{Handled, follow_link, parse_count};
use crate::azure::{Api, AzureError, PageSink, Reply};
use crate::domain::{Answer, ResourceId, USER_ASSIGNED_IDENTITY_TYPE};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SUBSCRIPTIONS_API_VERSION: &str = "2022-12-01";
pub const PROVIDERS_API_VERSION: &str = "2021-04-01";
pub const RESOURCE_GRAPH_API_VERSION: &str = "2024-04-01";
/// An api-version no resource provider accepts, sent only to learn the supported ones from the refusal.
pub const PROBE_API_VERSION: &str = "1900-01-01";
/// Rows per Resource Graph page: the documented maximum (ARG work-with-data).
pub const ARG_PAGE_SIZE: u32 = 1000;
/// Subscriptions per Resource Graph request: the REST API's documented batch (ARG troubleshoot).
pub const ARG_SUBSCRIPTION_BATCH: usize = 1000;

/// A subscription as `GET /subscriptions` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub subscription_id: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Provider {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_types: Vec<ProviderType>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderType {
    resource_type: String,
    #[serde(default)]
    api_versions: Vec<String>,
}

/// The Resource Graph tables miaudit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgTable {
    Resources,
    PolicyResources,
}

impl ArgTable {
    pub fn name(self) -> &'static str {
        match self {
            Self::Resources => "Resources",
            Self::PolicyResources => "PolicyResources",
        }
    }

    /// Policy assignments live in `policyresources`, everything else we audit in `resources`
    /// (ARG-TABLES, docs/azure-behaviour.md §3).
    pub fn for_type(full_type: &str) -> Self {
        if full_type == "microsoft.authorization/policyassignments" {
            Self::PolicyResources
        } else {
            Self::Resources
        }
    }
}

/// A resource type is only put into a query when it is made of characters ARM types use; anything
/// else goes to ARM directly, so no Graph-supplied text is ever spliced into KQL unescaped.
pub fn is_queryable_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'))
}

/// The Resource Graph query for the identity principals of resources of `types` (lower-case).
/// Projects only what the judge needs; `order by id` keeps paging stable (ARG paging-results).
pub fn identity_query(table: ArgTable, types: &[String]) -> String {
    let list = types
        .iter()
        .filter(|t| is_queryable_type(t))
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} | where type in~ ({list}) | project id, type, identityPrincipalId = tostring(identity.principalId), propertiesPrincipalId = tostring(properties.principalId) | order by id asc",
        table.name()
    )
}

/// What Resource Graph showed for one resource: its id and the principal it carries (both lower-case),
/// and the request id of the page (shared by the page's rows).
#[derive(Debug, Clone)]
pub struct ArgHit {
    pub resource_key: String,
    pub principal_key: Option<String>,
    pub request_id: Option<Arc<str>>,
}

fn non_empty(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The principal id a resource carries for the identity kind its type implies: a user-assigned
/// identity resource's `properties.principalId` (MSI-SPEC), otherwise `identity.principalId`.
/// Accepts both our projected columns and raw `identity` / `properties` objects.
pub fn principal_of(row: &Value) -> Option<String> {
    let is_uami = row
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case(USER_ASSIGNED_IDENTITY_TYPE));
    if is_uami {
        non_empty(row.get("propertiesPrincipalId"))
            .or_else(|| non_empty(row.get("properties").and_then(|p| p.get("principalId"))))
    } else {
        non_empty(row.get("identityPrincipalId"))
            .or_else(|| non_empty(row.get("identity").and_then(|p| p.get("principalId"))))
    }
}

/// Resource Graph rows as objects, whichever `resultFormat` the service used: `objectArray`, or
/// `table` (`{"columns":[{"name"}],"rows":[[...]]}`), the older default (ARG work-with-data).
fn rows_of(data: &Value) -> Option<Vec<Value>> {
    match data {
        Value::Array(rows) => Some(rows.clone()),
        Value::Object(t) => {
            let cols: Vec<String> = t
                .get("columns")?
                .as_array()?
                .iter()
                .map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect::<Option<_>>()?;
            let rows = t.get("rows")?.as_array()?;
            rows.iter()
                .map(|r| {
                    let r = r.as_array()?;
                    Some(Value::Object(
                        cols.iter().cloned().zip(r.iter().cloned()).collect(),
                    ))
                })
                .collect()
        }
        _ => None,
    }
}

/// Resource Graph rows as the client reads them (for the fuzz targets).
#[cfg(test)]
pub(crate) fn rows_for_fuzz(data: &Value) -> Option<usize> {
    rows_of(data).map(|r| r.len())
}

#[derive(Deserialize)]
struct ArgPage {
    data: Value,
    #[serde(rename = "$skipToken", default)]
    skip_token: Option<String>,
}

/// Spaces Resource Graph queries by the quota headers instead of bouncing off 429s (ARG-THR: when
/// `x-ms-user-quota-remaining` reaches 0, wait `x-ms-user-quota-resets-after`).
///
/// `resets-after` comes in whole seconds (`hh:mm:ss`), so a single answer places the window's reset only
/// within a second. Every answer of one window names the same reset, so the earliest instant any of
/// them implies (receipt + resets-after) is the tightest estimate when the service rounds up; waiting
/// for the last answer's figure alone overshot by ~0.6 s a window (1.36x the bound at 100k). If the
/// service truncates instead, the first early query gets a 429, and from then on a second is added.
#[derive(Default)]
struct Pacer {
    not_before: Option<Instant>,
    /// `x-ms-user-quota-remaining` of the previous answer: a rise means a new window began.
    last_remaining: Option<i64>,
    /// Earliest reset implied by the answers of the current window.
    window_reset: Option<Instant>,
    /// Added to every estimate once a paced query was throttled anyway.
    margin: Duration,
}

impl Pacer {
    /// Takes one answer's quota headers. A reset further away than `max_wait` is not believed (the pacer
    /// then does not wait; a service that really throttles answers 429, and the transport decides).
    fn note(
        &mut self,
        now: Instant,
        throttled: bool,
        remaining: Option<i64>,
        resets: Option<Duration>,
        max_wait: Duration,
    ) {
        if throttled {
            self.margin = Duration::from_secs(1);
        }
        let (Some(r), Some(d)) = (remaining, resets.filter(|d| *d <= max_wait)) else {
            self.not_before = None;
            return;
        };
        let Some(reset) = now.checked_add(d + self.margin) else {
            self.not_before = None;
            return;
        };
        let new_window = throttled || self.last_remaining.is_none_or(|last| r > last);
        self.window_reset = Some(match self.window_reset {
            Some(w) if !new_window => w.min(reset),
            _ => reset,
        });
        self.last_remaining = Some(r);
        self.not_before = if r <= 0 { self.window_reset } else { None };
    }
}

/// Resource type (lower-case) -> api versions the providers API lists.
type ProviderTypes = HashMap<String, Vec<String>>;

/// One namespace's lookup: the first caller fetches, concurrent callers wait for its result (no lock is
/// held across the network); `None` inside when discovery failed.
type ProviderLookup = Arc<tokio::sync::OnceCell<Option<Arc<ProviderTypes>>>>;

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

/// Whether a 2xx body is ARM's representation of the resource asked for: a JSON object whose `id` is
/// the requested id (case-insensitively; a trailing `/` ignored). A gateway's `{}`, a collection
/// (`{"value": [...]}`), another resource's body or a redirect that landed elsewhere is not.
fn is_the_resource(body: &Value, resource: &ResourceId) -> bool {
    body.get("id").and_then(Value::as_str).is_some_and(|id| {
        id.trim()
            .trim_end_matches('/')
            .eq_ignore_ascii_case(resource.as_str())
    })
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

    /// Every subscription these credentials can see, keyed by lower-case id.
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn fetch_subscriptions(
        &self,
        tenant: &str,
    ) -> Result<HashMap<String, Subscription>, AzureError> {
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
            let call = Call::get(Api::Arm, tenant, &url);
            let (page, _): (ListPage<Subscription>, _) =
                self.http.json(&call, "a subscription list").await?;
            for s in page.value {
                out.insert(s.subscription_id.to_ascii_lowercase(), s);
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

    async fn pace(&self) {
        let wait = {
            let p = self.pacer.lock();
            p.not_before
                .map(|t| t.saturating_duration_since(Instant::now()))
        };
        if let Some(w) = wait.filter(|w| !w.is_zero()) {
            tracing::debug!(?w, "pacing Resource Graph to its quota");
            tokio::time::sleep(w).await;
        }
    }

    fn note_quota(&self, reply: &Reply) {
        let remaining = reply
            .header("x-ms-user-quota-remaining")
            .and_then(parse_count);
        let resets = reply
            .header("x-ms-user-quota-resets-after")
            .and_then(crate::azure::transport::parse_hms);
        self.pacer.lock().note(
            Instant::now(),
            reply.status == 429,
            remaining,
            resets,
            self.http.policy().max_server_wait,
        );
    }

    /// The principal Resource Graph shows for every resource of `types` in `subscriptions`, into `sink`
    /// page by page. Returns the page count, or an error after the pages that did arrive (they stay
    /// usable: Resource Graph is only ever evidence of health).
    #[tracing::instrument(skip_all, fields(tenant = %tenant, table = table.name(), subscriptions = subscriptions.len()))]
    pub async fn fetch_identity_principals(
        &self,
        tenant: &str,
        subscriptions: &[String],
        table: ArgTable,
        types: &[String],
        sink: &mut impl PageSink<ArgHit>,
    ) -> Result<u32, AzureError> {
        let query = identity_query(table, types);
        let url = format!(
            "{}/providers/Microsoft.ResourceGraph/resources?api-version={RESOURCE_GRAPH_API_VERSION}",
            self.endpoint
        );
        let mut skip_token: Option<String> = None;
        let mut pages = 0u32;
        let mut seen_tokens = std::collections::HashSet::new();
        let mut empty = crate::azure::EmptyPages::default();
        loop {
            let mut options = json!({ "$top": ARG_PAGE_SIZE, "resultFormat": "objectArray" });
            if let Some(t) = &skip_token {
                options["$skipToken"] = json!(t);
            }
            // Same query and scopes on every page (ARG-SPEC examples).
            let body =
                json!({ "subscriptions": subscriptions, "query": query, "options": options });
            let call = Call {
                api: Api::ResourceGraph,
                tenant,
                method: reqwest::Method::POST,
                url: &url,
                json: Some(&body),
            };
            self.pace().await;
            let page = self
                .http
                .execute(&call, |reply| {
                    self.note_quota(&reply);
                    if !reply.is_success() {
                        return Handled::Done(Err(reply.into_status_error(Api::ResourceGraph)));
                    }
                    let decoded = reply
                        .json::<ArgPage>(Api::ResourceGraph, "a Resource Graph page")
                        .map_err(|e| e.to_string())
                        .and_then(|p| {
                            rows_of(&p.data)
                                .map(|rows| (rows, p.skip_token))
                                .ok_or_else(|| {
                                    "`data` is neither an object array nor a table".into()
                                })
                        });
                    match decoded {
                        Ok((rows, token)) => Handled::Done(Ok((rows, token, reply.request_id()))),
                        Err(e) => Handled::Retry(e),
                    }
                })
                .await??;
            pages += 1;
            let (rows, token, request_id) = page;
            empty.saw(Api::ResourceGraph, "a Resource Graph page", rows.len())?;
            let request_id: Option<Arc<str>> = request_id.map(Into::into);
            let mut hits = Vec::with_capacity(rows.len());
            for row in &rows {
                let Some(id) = row.get("id").and_then(Value::as_str) else {
                    return Err(AzureError::Decode {
                        api: Api::ResourceGraph,
                        what: "a Resource Graph row",
                        detail: "row without id".into(),
                    });
                };
                hits.push(ArgHit {
                    resource_key: id.trim_end_matches('/').to_ascii_lowercase(),
                    principal_key: principal_of(row).map(|p| p.to_ascii_lowercase()),
                    request_id: request_id.clone(),
                });
            }
            sink.accept(hits).await.map_err(AzureError::Staging)?;
            match token.filter(|t| !t.is_empty()) {
                None => return Ok(pages),
                Some(t) => {
                    if !seen_tokens.insert(t.clone()) {
                        return Err(AzureError::Decode {
                            api: Api::ResourceGraph,
                            what: "a Resource Graph page",
                            detail: "$skipToken repeats".into(),
                        });
                    }
                    skip_token = Some(t);
                }
            }
        }
    }

    /// Resource types and their api versions for `namespace`, from the subscription-level providers API
    /// (falling back to the tenant-level one, RES-SPEC `GetNamedProviderAtTenant.json`). Cached; one
    /// request however many checks ask at once.
    async fn provider_versions(
        &self,
        tenant: &str,
        namespace: &str,
        subscription: Option<&str>,
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

    async fn lookup_provider(
        &self,
        tenant: &str,
        namespace: &str,
        subscription: Option<&str>,
    ) -> Option<Arc<ProviderTypes>> {
        let mut urls = Vec::new();
        if let Some(s) = subscription {
            urls.extend(self.url(
                &["subscriptions", s, "providers", namespace],
                PROVIDERS_API_VERSION,
            ));
        }
        urls.extend(self.url(&["providers", namespace], PROVIDERS_API_VERSION));
        for url in &urls {
            let call = Call::get(Api::Arm, tenant, url);
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

    fn type_key(resource: &ResourceId) -> String {
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
    async fn api_versions(
        &self,
        tenant: &str,
        resource: &ResourceId,
        provider_subscription: Option<&str>,
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

    /// `{endpoint}/{segments...}?api-version=...`, each segment percent-encoded by the URL library (never
    /// spliced into a string), so no segment can add a path level, a query or a fragment.
    fn url(&self, segments: &[&str], api_version: &str) -> Option<String> {
        let mut u = url::Url::parse(&self.endpoint).ok()?;
        {
            let mut segs = u.path_segments_mut().ok()?;
            segs.pop_if_empty();
            for s in segments {
                if s.is_empty() || *s == "." || *s == ".." {
                    return None;
                }
                segs.push(s);
            }
        }
        u.query_pairs_mut().append_pair("api-version", api_version);
        Some(u.into())
    }

    fn resource_url(&self, resource: &ResourceId, api_version: &str) -> Option<String> {
        let segments: Vec<&str> = resource
            .as_str()
            .trim_start_matches('/')
            .split('/')
            .collect();
        self.url(&segments, api_version)
    }

    /// Waits until the subscription's read bucket, as last announced and refilled since, holds more than
    /// the reserve: pacing instead of bouncing off 429s. Never longer than the reserve takes to refill.
    async fn pace_arm(&self, key: &str) {
        let wait = {
            let q = self.arm_quota.lock();
            q.get(key).and_then(|(remaining, at)| {
                let estimate =
                    (*remaining).max(0) as f64 + at.elapsed().as_secs_f64() * ARM_REFILL_PER_S;
                (estimate < ARM_RESERVE).then(|| {
                    Duration::from_secs_f64(
                        ((ARM_RESERVE - estimate) / ARM_REFILL_PER_S).clamp(0.0, 1.0),
                    )
                })
            })
        };
        if let Some(w) = wait {
            tracing::debug!(
                ?w,
                subscription = key,
                "pacing ARM reads to the subscription's quota"
            );
            tokio::time::sleep(w).await;
        }
    }

    fn note_arm_quota(&self, key: &str, reply: &Reply) {
        if let Some(r) = reply
            .header("x-ms-ratelimit-remaining-subscription-reads")
            .and_then(parse_count)
        {
            self.arm_quota
                .lock()
                .insert(key.to_owned(), (r, Instant::now()));
        }
    }

    /// One ARM GET of the resource with `version`, reduced to an [`Answer`]. A 2xx counts only when it
    /// is the resource (its `id`); anything else is retried, then a failed check.
    async fn read_resource(&self, tenant: &str, resource: &ResourceId, version: &str) -> Check {
        let mut check = Check {
            answer: Answer::NotChecked,
            request_id: None,
            correlation_request_id: None,
            checked_at: chrono::Utc::now(),
        };
        let Some(url) = self.resource_url(resource, version) else {
            check.answer = Answer::Failed {
                what: "resource id does not form a URL".into(),
            };
            return check;
        };
        let call = Call::get(Api::Arm, tenant, &url);
        let quota_key = resource
            .subscription_id()
            .map_or_else(|| "tenant".to_owned(), str::to_ascii_lowercase);
        self.pace_arm(&quota_key).await;
        let is_uami = resource.is_user_assigned_identity();
        let res = self
            .http
            .execute(&call, |reply| {
                self.note_arm_quota(&quota_key, &reply);
                if reply.is_success() {
                    match serde_json::from_slice::<Value>(&reply.body) {
                        Ok(v) if is_the_resource(&v, resource) => {
                            let answer = match resource_principal(&v, is_uami) {
                                Err(why) => Answer::Failed { what: why },
                                Ok(principal_id) => Answer::Present {
                                    principal_id,
                                    latest_version: false,
                                },
                            };
                            Handled::Done((answer, reply))
                        }
                        Ok(_) => Handled::Retry(format!(
                            "ARM answered {} with a body that is not the resource (no matching id)",
                            reply.status
                        )),
                        Err(e) => Handled::Retry(format!("resource body does not decode: {e}")),
                    }
                } else {
                    // Bounded and redacted: it goes into findings, the API and exports.
                    let (code, message) = reply
                        .error_body()
                        .map(|(c, m)| (crate::azure::shorten(&c), crate::azure::shorten(&m)))
                        .unzip();
                    Handled::Done((
                        Answer::Error {
                            status: reply.status,
                            code,
                            message,
                        },
                        reply,
                    ))
                }
            })
            .await;
        check.checked_at = chrono::Utc::now();
        match res {
            Err(e) => {
                check.answer = Answer::Failed {
                    what: e.to_string(),
                };
            }
            Ok((answer, reply)) => {
                check.answer = answer;
                check.request_id = reply.arm_request_id();
                check.correlation_request_id = reply.correlation_request_id();
            }
        }
        check
    }

    /// ARM GET of one resource: the authoritative answer. Never an error: failures become
    /// [`Answer::Failed`], which the judge turns into *unknown*.
    ///
    /// Read with the newest stable api-version of the type. When the resource is there but shows no
    /// principal for this identity, it is read again with the newest version of any kind (previews
    /// included): older versions of some types do not report `identity` at all.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, resource = %resource))]
    pub async fn check_resource(
        &self,
        tenant: &str,
        resource: &ResourceId,
        provider_subscription: Option<&str>,
    ) -> Check {
        // Without discovered versions, ask with one no provider can accept: ARM's refusal lists the
        // versions it takes (NoRegisteredProviderFound / UnsupportedApiVersionValue), and the answer to
        // the probe itself is never taken as evidence.
        let (mut versions, mut probing, discovery_error) = match self
            .api_versions(tenant, resource, provider_subscription)
            .await
        {
            Ok(v) => (v, false, None),
            Err(e) => (
                Versions {
                    read_from: vec![PROBE_API_VERSION.to_owned()],
                    newest: None,
                    complete: false,
                },
                true,
                Some(e),
            ),
        };
        let mut learnt_once = false;
        loop {
            let version =
                newest_stable(&versions.read_from).unwrap_or_else(|| PROBE_API_VERSION.to_owned());
            let mut check = self.read_resource(tenant, resource, &version).await;
            // A version the RP does not take: use the ones its message lists, once.
            if !learnt_once
                && let Some(listed) = refused_versions(&check, &version)
                && newest_stable(&listed).is_some_and(|v| v != version)
            {
                self.learnt
                    .lock()
                    .insert(Self::type_key(resource), listed.clone());
                // ARM's own list for this resource (its location), just now.
                versions = Versions {
                    newest: newest(&listed),
                    read_from: listed,
                    complete: true,
                };
                probing = false;
                learnt_once = true;
                continue;
            }
            if probing {
                check.answer = Answer::Failed {
                    what: format!(
                        "{}; ARM's answer to a probe did not list supported versions",
                        discovery_error.unwrap_or_default()
                    ),
                };
                return check;
            }
            if matches!(
                check.answer,
                Answer::Present {
                    principal_id: None,
                    ..
                }
            ) {
                return self
                    .confirm_absence(tenant, resource, check, version, versions)
                    .await;
            }
            return check;
        }
    }

    /// The resource shows no principal for this identity when read with `read`: read it again with the
    /// newest api-version there is, so an absence is never an older version's omission. Marks the answer
    /// `latest_version` when it was read with the newest of a complete list. A re-read that gives no
    /// answer at all is a failed check; one refused for its version follows ARM's own list, once more.
    async fn confirm_absence(
        &self,
        tenant: &str,
        resource: &ResourceId,
        mut check: Check,
        mut read: String,
        mut versions: Versions,
    ) -> Check {
        for _ in 0..3 {
            let latest = versions.newest.clone().unwrap_or_else(|| read.clone());
            if latest == read {
                if let Answer::Present { latest_version, .. } = &mut check.answer {
                    *latest_version = versions.complete;
                }
                return check;
            }
            let again = self.read_resource(tenant, resource, &latest).await;
            match &again.answer {
                Answer::Present { .. } => {
                    check = again;
                    read = latest;
                }
                Answer::Failed { what } => {
                    return Check {
                        answer: Answer::Failed {
                            what: format!(
                                "re-reading with the newest api-version {latest}: {what}"
                            ),
                        },
                        ..again
                    };
                }
                _ => match refused_versions(&again, &latest) {
                    Some(listed) if newest(&listed).is_some() => {
                        versions = Versions {
                            newest: newest(&listed),
                            read_from: listed,
                            complete: true,
                        };
                    }
                    _ => {
                        // Not an answer about the resource (a redirect, a 401/403, a proxy): the absence
                        // stays unconfirmed, and the check did not complete.
                        let status = again.answer.clone();
                        return Check {
                            answer: Answer::Failed {
                                what: format!(
                                    "re-reading with the newest api-version {latest} gave no answer about the resource ({})",
                                    describe_answer(&status)
                                ),
                            },
                            ..again
                        };
                    }
                },
            }
        }
        check
    }
}

fn describe_answer(a: &Answer) -> String {
    match a {
        Answer::Error { status, code, .. } => {
            format!(
                "HTTP {status} {}",
                code.as_deref().unwrap_or("without an error code")
            )
        }
        Answer::Present { .. } => "the resource".into(),
        Answer::Failed { what } => what.clone(),
        Answer::NotChecked => "nothing".into(),
    }
}

/// The api-versions of a type, as far as a check knows them.
struct Versions {
    /// Where the version to read is chosen from (its newest stable).
    read_from: Vec<String>,
    /// The newest version of any kind, previews included.
    newest: Option<String>,
    /// Whether `newest` comes from a complete list: the provider's, or ARM's refusal for this resource.
    complete: bool,
}

/// The versions ARM lists when it refuses the one asked for (400 `NoRegisteredProviderFound`,
/// `InvalidApiVersionParameter`, `UnsupportedApiVersionValue`): only from ARM (its request id) and only
/// when the message names the version that was sent, so a proxy's or another request's list is never
/// taken for this resource's.
fn refused_versions(check: &Check, sent: &str) -> Option<Vec<String>> {
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

/// A key of a JSON object, matched exactly or else case-insensitively (providers differ in casing).
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Provisioning states after which a resource's body is settled (RPC: terminal states).
const SETTLED: &[&str] = &["Succeeded", "Failed", "Canceled", "Cancelled"];

/// The principal a resource's body shows for the identity kind: `properties.principalId` of a
/// user-assigned identity (MSI-SPEC), `identity.principalId` otherwise. `Err` when the body shows no
/// principal but cannot be taken at its word: a system-assigned identity switched on whose principal is
/// not there yet, or a resource still being provisioned.
fn resource_principal(body: &Value, is_uami: bool) -> Result<Option<String>, String> {
    let holder = if is_uami {
        get_ci(body, "properties")
    } else {
        get_ci(body, "identity")
    };
    if let Some(p) = non_empty(holder.and_then(|h| get_ci(h, "principalId"))) {
        return Ok(Some(p));
    }
    if !is_uami
        && let Some(kind) = holder
            .and_then(|h| get_ci(h, "type"))
            .and_then(Value::as_str)
        && kind.to_ascii_lowercase().contains("systemassigned")
    {
        return Err(format!(
            "the resource's identity type is {kind:?} but it shows no principal yet (being provisioned?)"
        ));
    }
    if let Some(state) = get_ci(body, "properties")
        .and_then(|p| get_ci(p, "provisioningState"))
        .and_then(Value::as_str)
        && !SETTLED.iter().any(|s| s.eq_ignore_ascii_case(state))
    {
        return Err(format!(
            "the resource is {state:?}: its identity is not settled"
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_waits_for_the_earliest_reset_its_window_implies() {
        const MAX: Duration = Duration::from_secs(300);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let mut p = Pacer::default();
        // First answer of a window at t0+40ms: 5 s left (rounded up), so the reset is at most t0+5.04.
        p.note(t0 + ms(40), false, Some(14), Some(s(5)), MAX);
        assert_eq!(p.not_before, None, "quota left: no wait");
        // Later answers still say 5 s (rounded up from 4.4): they imply a later instant, not kept.
        p.note(t0 + ms(600), false, Some(0), Some(s(5)), MAX);
        assert_eq!(p.not_before, Some(t0 + ms(5040)));
        // A new window (remaining rises) starts a new estimate.
        p.note(t0 + ms(5100), false, Some(14), Some(s(5)), MAX);
        p.note(t0 + ms(5600), false, Some(0), Some(s(4)), MAX);
        assert_eq!(p.not_before, Some(t0 + ms(9600)));
        // Throttled anyway (the service truncates): a second is added from then on.
        p.note(t0 + ms(9600), true, Some(0), Some(s(1)), MAX);
        assert_eq!(p.not_before, Some(t0 + ms(11_600)));
        p.note(t0 + ms(11_700), false, Some(14), Some(s(5)), MAX);
        p.note(t0 + ms(12_000), false, Some(0), Some(s(4)), MAX);
        assert_eq!(p.not_before, Some(t0 + ms(17_000)));
        // Without the headers there is nothing to pace by.
        p.note(t0 + ms(12_100), false, None, None, MAX);
        assert_eq!(p.not_before, None);
    }

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

    #[test]
    fn query_names_only_safe_types() {
        let q = identity_query(
            ArgTable::Resources,
            &[
                "microsoft.compute/virtualmachines".into(),
                "x') | union (evil".into(),
            ],
        );
        assert!(q.contains("'microsoft.compute/virtualmachines'"));
        assert!(!q.contains("evil"));
    }

    #[test]
    fn principal_comes_from_properties_for_user_assigned_identities() {
        let uami = json!({"id":"x","type":"microsoft.managedidentity/userassignedidentities","identityPrincipalId":"","propertiesPrincipalId":"p1"});
        assert_eq!(principal_of(&uami).as_deref(), Some("p1"));
        let vm = json!({"id":"x","type":"microsoft.compute/virtualmachines","identityPrincipalId":"p2","propertiesPrincipalId":""});
        assert_eq!(principal_of(&vm).as_deref(), Some("p2"));
        let raw = json!({"id":"x","type":"microsoft.compute/virtualmachines","identity":{"principalId":"p3"}});
        assert_eq!(principal_of(&raw).as_deref(), Some("p3"));
        let none =
            json!({"id":"x","type":"microsoft.compute/virtualmachines","identityPrincipalId":""});
        assert_eq!(principal_of(&none), None);
    }

    #[test]
    fn table_result_format_is_converted_to_objects() {
        let t = json!({"columns":[{"name":"id","type":"string"},{"name":"identityPrincipalId","type":"string"}],"rows":[["/a","p"]]});
        let rows = rows_of(&t).expect("table");
        assert_eq!(rows[0]["id"], "/a");
        assert_eq!(rows[0]["identityPrincipalId"], "p");
        assert!(rows_of(&json!("x")).is_none());
    }

    #[test]
    fn policy_assignments_are_in_policyresources() {
        assert_eq!(
            ArgTable::for_type("microsoft.authorization/policyassignments"),
            ArgTable::PolicyResources
        );
        assert_eq!(
            ArgTable::for_type("microsoft.web/sites/slots"),
            ArgTable::Resources
        );
    }
}
