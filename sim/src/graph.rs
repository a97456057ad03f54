//! Microsoft Graph: the `servicePrincipals` listing and its delta.

use crate::Inner;
use crate::model;
use crate::respond::{b64, fxhash, graph_error, new_id, respond, unb64};
use crate::token::{Audience, authorize};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

const SP_PROPERTIES: &[&str] = &[
    "id",
    "appId",
    "displayName",
    "alternativeNames",
    "servicePrincipalType",
    "accountEnabled",
    "servicePrincipalNames",
    "appOwnerOrganizationId",
    "tags",
    "appDisplayName",
    "deletedDateTime",
    "signInAudience",
    "description",
    "notes",
];

/// A content hash of a principal, to tell changes between delta rounds.
fn principal_hash(p: &model::SimPrincipal) -> u64 {
    fxhash(&p.to_json().to_string())
}

/// `GET /v1.0/servicePrincipals/delta` (G-DELTA): `$deltaToken=latest` starts tracking from now
/// (empty page + `@odata.deltaLink`); a delta link's `$deltatoken` returns what changed since it was
/// issued, deletions as `{"id", "@removed": {"reason": "deleted"}}`, and a new delta link; a token the
/// service no longer knows is 410 Gone `syncStateNotFound` (G-ERR). No `$filter` on type: delta filters
/// only by id, so every principal type comes back. Without a token the whole directory is returned.
fn graph_delta(inner: &Inner, q: &HashMap<String, String>, headers: &HeaderMap) -> Response {
    let w = inner.world.read().expect("world lock");
    let current: HashMap<String, u64> = w
        .principals
        .iter()
        .map(|p| (p.id.clone(), principal_hash(p)))
        .collect();
    let select: Option<Vec<String>> = q
        .get("$select")
        .map(|s| s.split(',').map(|p| p.trim().to_owned()).collect());
    let shape = |p: &model::SimPrincipal| p.to_json_selected(select.as_deref());
    let mut value = Vec::new();
    let latest = q.get("$deltaToken").or_else(|| q.get("$deltatoken"));
    match latest.map(String::as_str) {
        Some("latest") => {}
        Some(token) => {
            let snapshots = inner.delta_snapshots.lock().expect("snapshot lock");
            let Some(before) = snapshots.get(token) else {
                let mut res = graph_error(
                    headers,
                    410,
                    "syncStateNotFound",
                    "The sync state generation is not found; restart the sync from the beginning.",
                );
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{}/v1.0/servicePrincipals/delta",
                    inner.base_url
                )) {
                    res.headers_mut().insert("location", v);
                }
                return res;
            };
            for p in &w.principals {
                if before.get(&p.id) != Some(&principal_hash(p)) {
                    value.push(shape(p));
                }
            }
            for id in before.keys().filter(|id| !current.contains_key(*id)) {
                value.push(json!({"id": id, "@removed": {"reason": "deleted"}}));
            }
        }
        None => value.extend(w.principals.iter().map(shape)),
    }
    let token = format!("d{}", inner.seq.fetch_add(1, Ordering::Relaxed));
    {
        let mut snapshots = inner.delta_snapshots.lock().expect("snapshot lock");
        if snapshots.len() >= 16 {
            snapshots.clear();
        }
        snapshots.insert(token.clone(), current);
    }
    let mut qs = form_urlencoded::Serializer::new(String::new());
    if let Some(sel) = q.get("$select") {
        qs.append_pair("$select", sel);
    }
    qs.append_pair("$deltatoken", &token);
    let items = value.len().to_string();
    respond(
        200,
        vec![("x-sim-items", items), ("request-id", new_id())],
        &json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals",
            "value": value,
            "@odata.deltaLink": format!("{}/v1.0/servicePrincipals/delta?{}", inner.base_url, qs.finish()),
        }),
    )
}

/// `GET /v1.0/servicePrincipals` (G-LIST): `$filter` on `servicePrincipalType`, `$select`, `$top`
/// 1..999, absolute `@odata.nextLink` with `$skiptoken`.
pub(crate) fn graph(
    inner: &Inner,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    empty_page: bool,
) -> Response {
    if let Err(r) = authorize(inner, headers, Audience::Graph) {
        return r;
    }
    if method == Method::GET && path.eq_ignore_ascii_case("/v1.0/servicePrincipals/delta") {
        return graph_delta(inner, q, headers);
    }
    if method != Method::GET || !path.eq_ignore_ascii_case("/v1.0/servicePrincipals") {
        return graph_error(
            headers,
            400,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                path.rsplit('/').next().unwrap_or("")
            ),
        );
    }
    let (filter_type, select, top, offset) = if let Some(tok) = q.get("$skiptoken") {
        let Some(v) = unb64(tok) else {
            return graph_error(
                headers,
                400,
                "Directory_ExpiredPageToken",
                "The specified page token value has expired and can no longer be included in your request.",
            );
        };
        (
            v["f"].as_str().map(str::to_owned),
            v["s"].as_str().map(str::to_owned),
            usize::try_from(v["t"].as_u64().unwrap_or(100)).unwrap_or(100),
            usize::try_from(v["o"].as_u64().unwrap_or(0)).unwrap_or(0),
        )
    } else {
        let filter = match q.get("$filter") {
            None => None,
            Some(f) => {
                let f = f
                    .trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .trim();
                let parts: Vec<&str> = f.splitn(3, ' ').collect();
                match parts.as_slice() {
                    [prop, op, val]
                        if prop.eq_ignore_ascii_case("servicePrincipalType")
                            && op.eq_ignore_ascii_case("eq")
                            && val.starts_with('\'')
                            && val.ends_with('\'')
                            && val.len() >= 2 =>
                    {
                        Some(val[1..val.len() - 1].to_owned())
                    }
                    _ => {
                        return graph_error(
                            headers,
                            400,
                            "Request_UnsupportedQuery",
                            "Unsupported or invalid query filter clause specified for property 'servicePrincipalType' of resource 'ServicePrincipal'.",
                        );
                    }
                }
            }
        };
        let top = match q.get("$top") {
            None => 100,
            Some(t) => match t.parse::<usize>() {
                Ok(n) if (1..=999).contains(&n) => n,
                _ => {
                    return graph_error(
                        headers,
                        400,
                        "Request_BadRequest",
                        &format!(
                            "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
                        ),
                    );
                }
            },
        };
        if let Some(sel) = q.get("$select") {
            for p in sel.split(',').map(str::trim) {
                if !SP_PROPERTIES.iter().any(|k| k.eq_ignore_ascii_case(p)) {
                    return graph_error(
                        headers,
                        400,
                        "Request_BadRequest",
                        &format!(
                            "Could not find a property named '{p}' on type 'microsoft.graph.servicePrincipal'."
                        ),
                    );
                }
            }
        }
        (filter, q.get("$select").cloned(), top, 0)
    };
    let page_size = top
        .min(inner.config.read().expect("config lock").graph_max_page)
        .max(1);
    let w = inner.world.read().expect("world lock");
    let matching: Vec<&model::SimPrincipal> = w
        .principals
        .iter()
        .filter(|p| {
            filter_type
                .as_ref()
                .is_none_or(|t| p.sp_type.eq_ignore_ascii_case(t))
        })
        .collect();
    let selected: Option<Vec<String>> = select
        .as_ref()
        .map(|s| s.split(',').map(|p| p.trim().to_owned()).collect());
    // An injected empty page holds nothing and continues at the same offset.
    let (take, advance) = if empty_page {
        (0, 0)
    } else {
        (page_size, page_size)
    };
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(take)
        .map(|p| p.to_json_selected(selected.as_deref()))
        .collect();
    let mut body = json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#servicePrincipals{}", select.as_ref().map(|s| format!("({s})")).unwrap_or_default()),
        "value": page,
    });
    if offset + advance < matching.len() {
        let nonce = inner.seq.load(Ordering::Relaxed);
        let token = b64(
            &json!({"o": offset + advance, "f": filter_type, "s": select, "t": top, "n": nonce}),
        );
        let mut qs = form_urlencoded::Serializer::new(String::new());
        if let Some(f) = &filter_type {
            qs.append_pair("$filter", &format!("servicePrincipalType eq '{f}'"));
        }
        if let Some(s) = &select {
            qs.append_pair("$select", s);
        }
        qs.append_pair("$top", &top.to_string());
        qs.append_pair("$skiptoken", &token);
        body["@odata.nextLink"] = json!(format!(
            "{}/v1.0/servicePrincipals?{}",
            inner.base_url,
            qs.finish()
        ));
    }
    let rid = new_id();
    let crid = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| rid.clone(), str::to_owned);
    let items = body["value"].as_array().map_or(0, Vec::len).to_string();
    respond(200, vec![
        ("x-sim-items", items),
        ("request-id", rid),
        ("client-request-id", crid),
        ("x-ms-ags-diagnostic", r#"{"ServerInfo":{"DataCenter":"West Europe","Slice":"E","Ring":"5","ScaleUnit":"000","RoleInstance":"SIM"}}"#.to_owned()),
        ("content-type", "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8".to_owned()),
    ], &body)
}
