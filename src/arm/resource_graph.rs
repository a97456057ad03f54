//! Azure Resource Graph in bulk: the query for the identity principals of the resource types the
//! inventory names, its rows (either result format), and the pacer that keeps it inside its quota.

use super::{
    ARG_PAGE_SIZE, ArmClient, RESOURCE_GRAPH_API_VERSION, ROLE_QUERY_PRINCIPALS, non_empty,
};
use crate::azure::http::Call;
use crate::azure::transport::{Handled, parse_count};
use crate::azure::{Api, AzureError, PageSink, Reply};
use crate::domain::{
    DanglingAssignment, ObjectId, RoleAssignment, SubscriptionId, TenantId,
    USER_ASSIGNED_IDENTITY_TYPE, is_guid, is_privileged, role_guid,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub principal_key: Option<ObjectId>,
    pub request_id: Option<Arc<str>>,
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
pub(super) fn rows_of(data: &Value) -> Option<Vec<Value>> {
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
pub(super) struct ArgPage {
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
pub(super) struct Pacer {
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
    pub(super) fn note(
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

impl ArmClient {
    pub(super) async fn pace(&self) {
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

    pub(super) fn note_quota(&self, reply: &Reply) {
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
        tenant: &TenantId,
        subscriptions: &[SubscriptionId],
        table: ArgTable,
        types: &[String],
        sink: &mut impl PageSink<ArgHit>,
    ) -> Result<u32, AzureError> {
        let query = identity_query(table, types);
        let mut pages = ArgPages::new(tenant, subscriptions, &query);
        let mut empty = crate::azure::EmptyPages::default();
        while let Some((rows, request_id)) = pages.next(self).await? {
            empty.saw(Api::ResourceGraph, "a Resource Graph page", rows.len())?;
            sink.accept(hits_of(&rows, request_id)?)
                .await
                .map_err(AzureError::Staging)?;
        }
        Ok(pages.count)
    }

    /// Blast radius: the role assignments `principals` (object ids) hold in `subscriptions`, from
    /// `authorizationresources` (ARG-TABLES), [`ROLE_QUERY_PRINCIPALS`] principals a query as Resource
    /// Graph's guidance asks; [`Self::name_assignments`] names their roles. Only GUID-shaped principal ids
    /// are asked about (they go into the query); assignments at management-group scope are not seen with
    /// a subscription scope. An error means the lookup is incomplete and nothing of it should replace
    /// what is known.
    pub async fn fetch_role_assignments(
        &self,
        tenant: &TenantId,
        subscriptions: &[SubscriptionId],
        principals: &[ObjectId],
    ) -> Result<Vec<(ObjectId, RoleAssignment)>, AzureError> {
        let asked: Vec<&ObjectId> = principals.iter().filter(|p| is_guid(p.as_str())).collect();
        let mut found: Vec<(ObjectId, RoleAssignment)> = Vec::new();
        if subscriptions.is_empty() {
            return Ok(found);
        }
        for batch in asked.chunks(ROLE_QUERY_PRINCIPALS) {
            let list = batch
                .iter()
                .map(|p| format!("'{}'", p.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            let query = format!(
                "authorizationresources | where type =~ 'microsoft.authorization/roleassignments' | where tostring(properties.principalId) in~ ({list}) | project id, principalId = tolower(tostring(properties.principalId)), roleDefinitionId = tostring(properties.roleDefinitionId), scope = tostring(properties.scope) | order by id asc"
            );
            for row in self.query_all(tenant, subscriptions, &query).await? {
                let d = assignment_of(&row)?;
                // Only what was asked: a row about another principal is not evidence about ours.
                let Some(owner) = batch.iter().find(|p| p.as_str() == d.principal_id) else {
                    continue;
                };
                found.push(((*owner).clone(), d.assignment));
            }
        }
        Ok(found)
    }

    /// Names the roles of `found` (from [`Self::fetch_role_assignments`] over `subscriptions`) from the
    /// role definitions Resource Graph shows there: one query per 100 roles, however many lookups
    /// found them.
    pub async fn name_assignments(
        &self,
        tenant: &TenantId,
        subscriptions: &[SubscriptionId],
        found: &mut [(ObjectId, RoleAssignment)],
    ) -> Result<(), AzureError> {
        if subscriptions.is_empty() || found.is_empty() {
            return Ok(());
        }
        let names = self
            .role_names(tenant, subscriptions, found.iter().map(|(_, a)| a))
            .await?;
        // Only where these subscriptions name the role: `found` may hold assignments other batches of
        // subscriptions named (a custom role is defined in one place).
        for (_, a) in found {
            if let Some(n) = names.get(&role_guid(&a.role_definition_id)) {
                a.role_name = Some(n.clone());
            }
        }
        Ok(())
    }

    /// The names of the roles of `assignments`, by role GUID, from the role definitions Resource Graph
    /// shows in `subscriptions`.
    async fn role_names(
        &self,
        tenant: &TenantId,
        subscriptions: &[SubscriptionId],
        assignments: impl Iterator<Item = &RoleAssignment>,
    ) -> Result<std::collections::HashMap<String, String>, AzureError> {
        let mut guids: Vec<String> = assignments
            .map(|a| role_guid(&a.role_definition_id))
            .filter(|g| is_guid(g))
            .collect();
        guids.sort();
        guids.dedup();
        let mut names = std::collections::HashMap::new();
        for batch in guids.chunks(100) {
            let list = batch
                .iter()
                .map(|g| format!("'{g}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let query = format!(
                "authorizationresources | where type =~ 'microsoft.authorization/roledefinitions' | where name in~ ({list}) | project id, name = tolower(name), roleName = tostring(properties.roleName) | order by id asc"
            );
            for row in self.query_all(tenant, subscriptions, &query).await? {
                if let (Some(n), Some(r)) = (
                    row.get("name").and_then(Value::as_str),
                    row.get("roleName").and_then(Value::as_str),
                ) {
                    names.insert(n.to_owned(), r.to_owned());
                }
            }
        }
        Ok(names)
    }

    /// Every role assignment to a service principal in `subscriptions`, with its principal (for the
    /// dangling-assignment check) and role name.
    pub async fn fetch_service_principal_assignments(
        &self,
        tenant: &TenantId,
        subscriptions: &[SubscriptionId],
    ) -> Result<Vec<DanglingAssignment>, AzureError> {
        if subscriptions.is_empty() {
            return Ok(Vec::new());
        }
        let query = "authorizationresources | where type =~ 'microsoft.authorization/roleassignments' | where tostring(properties.principalType) =~ 'ServicePrincipal' | project id, principalId = tolower(tostring(properties.principalId)), roleDefinitionId = tostring(properties.roleDefinitionId), scope = tostring(properties.scope), createdOn = tostring(properties.createdOn) | order by id asc";
        let mut found = Vec::new();
        for row in self.query_all(tenant, subscriptions, query).await? {
            found.push(assignment_of(&row)?);
        }
        Ok(found)
    }

    /// Fills in the role names of `assignments` (only those found dangling are named: a large
    /// tenant's every assignment is not).
    pub async fn name_roles(
        &self,
        tenant: &TenantId,
        subscriptions: &[SubscriptionId],
        assignments: &mut [DanglingAssignment],
    ) -> Result<(), AzureError> {
        let names = self
            .role_names(
                tenant,
                subscriptions,
                assignments.iter().map(|d| &d.assignment),
            )
            .await?;
        for d in assignments {
            d.assignment.role_name = names
                .get(&role_guid(&d.assignment.role_definition_id))
                .cloned();
        }
        Ok(())
    }

    /// Every row of a Resource Graph query over `subscriptions`, page by page.
    async fn query_all(
        &self,
        tenant: &TenantId,
        subscriptions: &[SubscriptionId],
        query: &str,
    ) -> Result<Vec<Value>, AzureError> {
        let mut pages = ArgPages::new(tenant, subscriptions, query);
        let mut rows = Vec::new();
        while let Some((page, _)) = pages.next(self).await? {
            rows.extend(page);
        }
        Ok(rows)
    }

    /// One Resource Graph query over `subscriptions` (one row at most): whether the credential may query
    /// it (for `miaudit check`).
    pub async fn probe_resource_graph(
        &self,
        tenant: &TenantId,
        subscriptions: &[SubscriptionId],
    ) -> Result<usize, AzureError> {
        let url = self.arg_url();
        let body = json!({
            "subscriptions": subscriptions,
            "query": "Resources | project id | limit 1",
            "options": { "$top": 1, "resultFormat": "objectArray" },
        });
        let (rows, _, _) = self.arg_page(&arg_call(tenant, &url, &body)).await?;
        Ok(rows.len())
    }

    /// The Resource Graph query endpoint.
    fn arg_url(&self) -> String {
        format!(
            "{}/providers/Microsoft.ResourceGraph/resources?api-version={RESOURCE_GRAPH_API_VERSION}",
            self.endpoint
        )
    }

    /// One page of Resource Graph, paced by its quota: its rows as objects, its `$skipToken`, and the
    /// request id of the answer. A body that does not decode is retried, as a failed attempt.
    async fn arg_page(
        &self,
        call: &Call<'_>,
    ) -> Result<(Vec<Value>, Option<String>, Option<String>), AzureError> {
        self.pace().await;
        self.http
            .execute(call, |reply| {
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
                            .ok_or_else(|| "`data` is neither an object array nor a table".into())
                    });
                match decoded {
                    Ok((rows, token)) => Handled::Done(Ok((rows, token, reply.request_id()))),
                    Err(e) => Handled::Retry(e),
                }
            })
            .await?
    }
}

/// One role-assignment row of our projection (`id`, `principalId`, `roleDefinitionId`, `scope`,
/// optionally `createdOn`); a row without the first three fails the lookup.
fn assignment_of(row: &Value) -> Result<DanglingAssignment, AzureError> {
    let field = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(id), Some(principal), Some(role)) =
        (field("id"), field("principalId"), field("roleDefinitionId"))
    else {
        return Err(AzureError::Decode {
            api: Api::ResourceGraph,
            what: "a role assignment",
            detail: "a row without id, principalId or roleDefinitionId".into(),
        });
    };
    Ok(DanglingAssignment {
        principal_id: principal.to_ascii_lowercase(),
        created_on: field("createdOn")
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(&c).ok())
            .map(|c| c.with_timezone(&chrono::Utc)),
        assignment: RoleAssignment {
            privileged: is_privileged(&role),
            role_definition_id: role,
            role_name: None,
            scope: field("scope").unwrap_or_default(),
            id,
        },
    })
}

/// The pages of one Resource Graph query: the same query and scopes on every page (ARG-SPEC examples),
/// each after the previous page's `$skipToken`; a token seen before fails the query after that page (it
/// would loop).
struct ArgPages<'a> {
    tenant: &'a TenantId,
    subscriptions: &'a [SubscriptionId],
    query: &'a str,
    skip_token: Option<String>,
    seen_tokens: std::collections::HashSet<String>,
    done: bool,
    /// The last page's `$skipToken` was seen before: its rows were given, the next call fails.
    repeated: bool,
    /// Pages read so far.
    count: u32,
}

impl<'a> ArgPages<'a> {
    fn new(tenant: &'a TenantId, subscriptions: &'a [SubscriptionId], query: &'a str) -> Self {
        Self {
            tenant,
            subscriptions,
            query,
            skip_token: None,
            seen_tokens: Default::default(),
            done: false,
            repeated: false,
            count: 0,
        }
    }

    /// The next page's rows and request id; `None` after the last page.
    async fn next(
        &mut self,
        client: &ArmClient,
    ) -> Result<Option<(Vec<Value>, Option<String>)>, AzureError> {
        if self.repeated {
            return Err(AzureError::Decode {
                api: Api::ResourceGraph,
                what: "a Resource Graph page",
                detail: "$skipToken repeats".into(),
            });
        }
        if self.done {
            return Ok(None);
        }
        let mut options = json!({ "$top": ARG_PAGE_SIZE, "resultFormat": "objectArray" });
        if let Some(t) = &self.skip_token {
            options["$skipToken"] = json!(t);
        }
        let body =
            json!({ "subscriptions": self.subscriptions, "query": self.query, "options": options });
        let url = client.arg_url();
        let (rows, token, request_id) =
            client.arg_page(&arg_call(self.tenant, &url, &body)).await?;
        self.count += 1;
        match token.filter(|t| !t.is_empty()) {
            None => self.done = true,
            Some(t) if self.seen_tokens.insert(t.clone()) => self.skip_token = Some(t),
            // The page that arrived is still usable (Resource Graph is only evidence of health).
            Some(_) => self.repeated = true,
        }
        Ok(Some((rows, request_id)))
    }
}

/// A Resource Graph query (POST) of `tenant` with `body`.
fn arg_call<'a>(tenant: &'a TenantId, url: &'a str, body: &'a Value) -> Call<'a> {
    Call {
        api: Api::ResourceGraph,
        tenant: tenant.as_str(),
        method: reqwest::Method::POST,
        url,
        json: Some(body),
    }
}

/// What a page's rows show: each resource's id and principal, lower-case, with the page's request id. A
/// row without an id fails the page.
fn hits_of(rows: &[Value], request_id: Option<String>) -> Result<Vec<ArgHit>, AzureError> {
    let request_id: Option<Arc<str>> = request_id.map(Into::into);
    let mut hits = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(id) = row.get("id").and_then(Value::as_str) else {
            return Err(AzureError::Decode {
                api: Api::ResourceGraph,
                what: "a Resource Graph row",
                detail: "row without id".into(),
            });
        };
        hits.push(ArgHit {
            resource_key: id.trim_end_matches('/').to_ascii_lowercase(),
            principal_key: principal_of(row).map(ObjectId::from),
            request_id: request_id.clone(),
        });
    }
    Ok(hits)
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
