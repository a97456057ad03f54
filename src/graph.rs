//! Inventory: the tenant's managed-identity service principals from Microsoft Graph.
//!
//! `GET /v1.0/servicePrincipals?$filter=servicePrincipalType eq 'ManagedIdentity'&$select=...&$top=999`,
//! then the absolute `@odata.nextLink` until it is absent; a page may hold fewer items than asked, or
//! none (G-LIST: page size max 999; G-PAGE: paging). A plain GET suffices for this filter, no
//! `ConsistencyLevel` (SEC-MI, TRANSFER). The type is checked again client-side, so a principal of
//! another type is never audited even if a server ignores the filter.

use crate::azure::http::{AzureHttp, Call};
use crate::azure::transport::follow_link;
use crate::azure::{Api, AzureError, PageSink};
use crate::domain::{ManagedIdentity, ObjectId, TenantId};
use serde::Deserialize;
use std::collections::HashSet;

/// Properties we read; `id` is returned whatever `$select` says.
pub const SELECT: &str = "id,appId,displayName,alternativeNames,servicePrincipalType";
/// Graph's maximum page size for service principals (G-LIST).
pub const PAGE_SIZE: u32 = 999;

#[derive(Deserialize)]
struct Page {
    value: Vec<ServicePrincipal>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePrincipal {
    id: String,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    alternative_names: Option<Vec<String>>,
    #[serde(default)]
    service_principal_type: Option<String>,
}

/// How a complete inventory went (the identities went to the sink).
#[derive(Debug, Default)]
pub struct Inventory {
    pub identities: u64,
    pub pages: u32,
    /// Restarts from the first page after an expired page token.
    pub restarts: u32,
}

/// What a delta round returned: principals that changed (managed identities, parsed), ids that left the
/// inventory (deleted, or no longer of type ManagedIdentity), and the next delta link.
#[derive(Debug, Default)]
pub struct Delta {
    pub changed: Vec<ManagedIdentity>,
    pub gone: Vec<ObjectId>,
    pub link: String,
}

#[derive(Deserialize)]
struct DeltaPage {
    value: Vec<serde_json::Value>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// Restarts of the inventory after `Directory_ExpiredPageToken` before giving up.
pub const MAX_RESTARTS: u32 = 3;

pub struct GraphClient {
    http: AzureHttp,
    /// Root such as `https://graph.microsoft.com`; we add `/v1.0/...`.
    endpoint: String,
}

/// Decodes a page as the inventory does (for the fuzz targets).
#[cfg(test)]
pub(crate) fn decode_page_for_fuzz(body: &[u8]) -> Option<usize> {
    serde_json::from_slice::<Page>(body)
        .ok()
        .map(|p| p.value.len())
}

impl GraphClient {
    fn delta_url(&self, extra: &str) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("$select", SELECT)
            .append_pair("$deltaToken", extra)
            .finish();
        format!("{}/v1.0/servicePrincipals/delta?{query}", self.endpoint)
    }

    /// Which of `ids` exist as directory objects, by `POST /v1.0/directoryObjects/getByIds` (at most
    /// 1,000 ids a request, as Graph documents; types service principal, user and group, so that an
    /// assignment whose principalType is wrong is not taken for a missing principal). `canary` is a
    /// principal known to exist (the inventory listed it moments ago), asked in every batch: an answer
    /// that lacks it, names an id that was not asked, continues on another page, or is not Graph's
    /// `directoryObjects` answer is not evidence, and the whole lookup fails. Only a checked answer says
    /// an id is gone.
    pub async fn existing_principals(
        &self,
        tenant: &TenantId,
        ids: &[String],
        canary: &str,
    ) -> Result<std::collections::HashSet<String>, AzureError> {
        #[derive(Deserialize)]
        struct Objects {
            #[serde(rename = "@odata.context")]
            context: Option<String>,
            #[serde(rename = "@odata.nextLink")]
            next_link: Option<String>,
            value: Vec<serde_json::Value>,
        }
        let not_evidence = |detail: &str| AzureError::Decode {
            api: Api::Graph,
            what: "a getByIds answer",
            detail: detail.to_owned(),
        };
        let canary = canary.to_ascii_lowercase();
        let url = format!("{}/v1.0/directoryObjects/getByIds", self.endpoint);
        let mut found = std::collections::HashSet::new();
        for batch in ids.chunks(999) {
            let mut asked: Vec<&str> = batch.iter().map(String::as_str).collect();
            if !asked.contains(&canary.as_str()) {
                asked.push(&canary);
            }
            let body = serde_json::json!({
                "ids": asked,
                "types": ["servicePrincipal", "user", "group"],
            });
            let call = Call {
                api: Api::Graph,
                tenant: tenant.as_str(),
                method: reqwest::Method::POST,
                url: &url,
                json: Some(&body),
            };
            let (objects, _): (Objects, _) = self.http.json(&call, "a getByIds answer").await?;
            if !objects
                .context
                .as_deref()
                .is_some_and(|c| c.ends_with("#directoryObjects"))
            {
                return Err(not_evidence("not Graph's directoryObjects answer"));
            }
            if objects.next_link.is_some() {
                return Err(not_evidence("the answer continues on another page"));
            }
            let mut answered = std::collections::HashSet::new();
            for o in objects.value {
                let Some(id) = o.get("id").and_then(serde_json::Value::as_str) else {
                    return Err(not_evidence("an object without an id"));
                };
                let id = id.to_ascii_lowercase();
                if !asked.contains(&id.as_str()) {
                    return Err(not_evidence("an object that was not asked about"));
                }
                answered.insert(id);
            }
            if !answered.contains(&canary) {
                return Err(not_evidence(
                    "the answer lacks a principal the inventory just listed",
                ));
            }
            found.extend(answered);
        }
        Ok(found)
    }

    /// Starts tracking changes from now (`$deltaToken=latest`, G-DELTA); returns the delta link.
    pub async fn start_delta(&self, tenant: &TenantId) -> Result<String, AzureError> {
        let url = self.delta_url("latest");
        let call = Call::get(Api::Graph, tenant.as_str(), &url);
        let (page, _): (DeltaPage, _) = self.http.json(&call, "a delta page").await?;
        page.delta_link.ok_or_else(|| AzureError::Decode {
            api: Api::Graph,
            what: "a delta page",
            detail: "no @odata.deltaLink".into(),
        })
    }

    /// Follows a delta link to its next delta link. `Ok(None)`: the service wants a full resync (410 or
    /// `syncStateNotFound`), or an item lacks the properties needed to audit it; the caller then lists
    /// the inventory in full.
    pub async fn fetch_delta(
        &self,
        tenant: &TenantId,
        link: &str,
    ) -> Result<Option<Delta>, AzureError> {
        let mut delta = Delta::default();
        let mut url =
            follow_link(&self.delta_url("latest"), link).ok_or(AzureError::ForeignLink {
                api: Api::Graph,
                link: link.to_owned(),
            })?;
        let mut empty = crate::azure::EmptyPages::default();
        for _ in 0..100_000 {
            let call = Call::get(Api::Graph, tenant.as_str(), &url);
            let page: DeltaPage = match self.http.json(&call, "a delta page").await {
                Ok((p, _)) => p,
                Err(AzureError::Status { status, code, .. })
                    if status == 410 || code.eq_ignore_ascii_case("syncStateNotFound") =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            if page.next_link.is_some() {
                empty.saw(Api::Graph, "a delta page", page.value.len())?;
            }
            for item in page.value {
                let Some(id) = item.get("id").and_then(|v| v.as_str()).map(ObjectId::new) else {
                    return Ok(None);
                };
                if item.get("@removed").is_some() {
                    delta.gone.push(id);
                    continue;
                }
                let (Some(kind), Some(names)) = (
                    item.get("servicePrincipalType").and_then(|v| v.as_str()),
                    item.get("alternativeNames"),
                ) else {
                    // A partial item cannot be audited: list the inventory in full instead.
                    return Ok(None);
                };
                if !kind.eq_ignore_ascii_case("ManagedIdentity") {
                    delta.gone.push(id);
                    continue;
                }
                let names: Vec<String> = serde_json::from_value(names.clone()).unwrap_or_default();
                let text = |k: &str| {
                    item.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_owned()
                };
                delta.changed.push(ManagedIdentity::from_alternative_names(
                    tenant,
                    id,
                    text("appId"),
                    text("displayName"),
                    names,
                ));
            }
            match (page.next_link, page.delta_link) {
                (Some(next), _) => {
                    url = follow_link(&url, &next).ok_or(AzureError::ForeignLink {
                        api: Api::Graph,
                        link: next,
                    })?;
                }
                (None, Some(d)) => {
                    delta.link = d;
                    return Ok(Some(delta));
                }
                (None, None) => return Ok(None),
            }
        }
        Ok(None)
    }

    pub fn new(http: AzureHttp, endpoint: &str) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        }
    }

    pub fn first_page_url(&self) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("$filter", "servicePrincipalType eq 'ManagedIdentity'")
            .append_pair("$select", SELECT)
            .append_pair("$top", &PAGE_SIZE.to_string())
            .finish();
        format!("{}/v1.0/servicePrincipals?{query}", self.endpoint)
    }

    /// The first page of the tenant's managed identities: one request (for `miaudit check`).
    pub async fn probe(&self, tenant: &TenantId) -> Result<Vec<ManagedIdentity>, AzureError> {
        let url = self.first_page_url();
        let call = Call::get(Api::Graph, tenant.as_str(), &url);
        let (page, _): (Page, _) = self.http.json(&call, "a servicePrincipal page").await?;
        identities_of(tenant, page.value)
    }

    /// Lists every managed-identity service principal of `tenant` into `sink`, page by page. Either the
    /// whole list or an error: a partial inventory is never reported complete. A principal may reach
    /// the sink twice (paging under churn repeats items, G-PAGE): the sink keeps one verdict per
    /// principal. After an expired page token the sink is told to start over.
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn fetch_managed_identities(
        &self,
        tenant: &TenantId,
        sink: &mut impl PageSink<ManagedIdentity>,
    ) -> Result<Inventory, AzureError> {
        let mut url = self.first_page_url();
        let mut seen_links = HashSet::new();
        let mut empty = crate::azure::EmptyPages::default();
        let mut inv = Inventory::default();
        let first = url.clone();
        // Each page is written while the next one is fetched: the writes cost no wall time.
        let mut pending: Vec<ManagedIdentity> = Vec::new();
        loop {
            let call = Call::get(Api::Graph, tenant.as_str(), &url);
            let write = async {
                if pending.is_empty() {
                    Ok(())
                } else {
                    sink.accept(std::mem::take(&mut pending)).await
                }
            };
            let (written, fetched) =
                tokio::join!(write, self.http.json(&call, "a servicePrincipal page"));
            written.map_err(AzureError::Staging)?;
            let page: Page = match fetched {
                Ok((page, _)) => page,
                // A page token that expired: start over from the first page, as Graph asks (G-ERR), a
                // bounded number of times. The sink forgets what it took: only a listing read to its
                // end counts, so a principal deleted since the first pages is not audited.
                Err(AzureError::Status { code, .. })
                    if code.eq_ignore_ascii_case("Directory_ExpiredPageToken")
                        && url != first
                        && inv.restarts < MAX_RESTARTS =>
                {
                    sink.restart().await.map_err(AzureError::Staging)?;
                    inv.restarts += 1;
                    tracing::info!(
                        restarts = inv.restarts,
                        "page token expired; restarting the inventory"
                    );
                    seen_links.clear();
                    url.clone_from(&first);
                    continue;
                }
                Err(e) => return Err(e),
            };
            inv.pages += 1;
            empty.saw(Api::Graph, "a servicePrincipal page", page.value.len())?;
            let items = identities_of(tenant, page.value)?;
            inv.identities += items.len() as u64;
            pending = items;
            match page.next_link {
                None => break,
                Some(next) => url = next_page(&url, &next, &mut seen_links)?,
            }
        }
        if !pending.is_empty() {
            sink.accept(pending).await.map_err(AzureError::Staging)?;
        }
        tracing::debug!(
            identities = inv.identities,
            pages = inv.pages,
            "inventory complete"
        );
        Ok(inv)
    }
}

/// The managed identities of one page. The server filtered by type; a principal that names another type
/// anyway is skipped, one that names none is taken at the filter's word. Graph always returns `id`; a
/// principal without one cannot be tracked or audited, and fails the page.
fn identities_of(
    tenant: &TenantId,
    page: Vec<ServicePrincipal>,
) -> Result<Vec<ManagedIdentity>, AzureError> {
    let mut items = Vec::with_capacity(page.len());
    for sp in page {
        if sp.id.trim().is_empty() {
            return Err(AzureError::Decode {
                api: Api::Graph,
                what: "a servicePrincipal page",
                detail: "a principal without an id".into(),
            });
        }
        let is_mi = sp
            .service_principal_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("ManagedIdentity"));
        if is_mi {
            items.push(ManagedIdentity::from_alternative_names(
                tenant,
                sp.id.into(),
                sp.app_id.unwrap_or_default(),
                sp.display_name.unwrap_or_default(),
                sp.alternative_names.unwrap_or_default(),
            ));
        }
    }
    Ok(items)
}

/// The URL of the next page: the link must stay on the listing (origin and path) and not repeat one
/// already followed (a loop).
fn next_page(url: &str, next: &str, seen: &mut HashSet<String>) -> Result<String, AzureError> {
    let Some(next_url) = follow_link(url, next) else {
        return Err(AzureError::ForeignLink {
            api: Api::Graph,
            link: next.to_owned(),
        });
    };
    if !seen.insert(next_url.clone()) {
        return Err(AzureError::Decode {
            api: Api::Graph,
            what: "a servicePrincipal page",
            detail: "@odata.nextLink repeats an earlier link".into(),
        });
    }
    Ok(next_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_decodes_documented_shape_and_rejects_missing_value() {
        let p: Page = serde_json::from_str(
            r##"{"@odata.context":"x","value":[{"@odata.type":"#microsoft.graph.servicePrincipal","alternativeNames":["isExplicit=True","/subscriptions/1b877039/resourcegroups/kjh/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kjh-mi"],"appId":"a7","displayName":"kjh-mi","id":"8097","servicePrincipalType":"ManagedIdentity"}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/servicePrincipals?$skiptoken=X"}"##,
        )
        .expect("decodes");
        assert_eq!(p.value.len(), 1);
        assert!(p.next_link.is_some());
        assert!(serde_json::from_str::<Page>(r#"{"@odata.context":"x"}"#).is_err());
        // alternativeNames may be null.
        let p: Page = serde_json::from_str(r#"{"value":[{"id":"1","alternativeNames":null}]}"#)
            .expect("decodes");
        assert!(p.value[0].alternative_names.is_none());
    }
}
