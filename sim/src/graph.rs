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
    body: &[u8],
    empty_page: bool,
) -> Response {
    if let Err(r) = authorize(inner, headers, Audience::Graph) {
        return r;
    }
    if method == Method::POST && path.eq_ignore_ascii_case("/v1.0/directoryObjects/getByIds") {
        return get_by_ids(inner, headers, body, empty_page);
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
    let listing = match q.get("$skiptoken") {
        Some(tok) => Listing::from_skip_token(tok, headers),
        None => Listing::from_query(q, headers),
    };
    match listing {
        Ok(l) => list_page(inner, &l, headers, empty_page),
        Err(r) => r,
    }
}

/// `POST /v1.0/directoryObjects/getByIds` (G-GETBYIDS): `{"ids": [...], "types": [...]}`, at most
/// 1,000 ids; answers the directory objects that exist among them (here: service principals), in no
/// particular order, each with its `@odata.type`. An id that does not exist is simply not in the answer.
/// With `empty_page` (an injected fault), the answer lists nothing: an empty but well-formed answer, as a
/// replica that has not caught up or a cache would give.
fn get_by_ids(inner: &Inner, headers: &HeaderMap, body: &[u8], empty_page: bool) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return graph_error(
            headers,
            400,
            "BadRequest",
            "Unable to read JSON request payload.",
        );
    };
    let Some(ids) = req.get("ids").and_then(Value::as_array) else {
        return graph_error(
            headers,
            400,
            "BadRequest",
            "The 'ids' parameter is required.",
        );
    };
    if ids.len() > 1000 {
        return graph_error(
            headers,
            400,
            "BadRequest",
            "The number of ids in the request exceeds the limit of 1000.",
        );
    }
    let wants_sp = match req.get("types").and_then(Value::as_array) {
        // Types not given: every kind of directory object.
        None => true,
        Some(t) => t
            .iter()
            .filter_map(Value::as_str)
            .any(|t| t.eq_ignore_ascii_case("servicePrincipal")),
    };
    let w = inner.world.read().expect("world lock");
    let value: Vec<Value> = if wants_sp && !empty_page {
        ids.iter()
            .filter_map(Value::as_str)
            .filter_map(|id| w.principals.iter().find(|p| p.id.eq_ignore_ascii_case(id)))
            .map(|p| {
                let mut v =
                    p.to_json_selected(Some(&["appId".to_owned(), "displayName".to_owned()]));
                v["@odata.type"] = json!("#microsoft.graph.servicePrincipal");
                v
            })
            .collect()
    } else {
        Vec::new()
    };
    respond(
        200,
        vec![("request-id", new_id())],
        &json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
            "value": value,
        }),
    )
}

/// What a `servicePrincipals` listing asks for, from its query or its skip token.
struct Listing {
    filter_type: Option<String>,
    select: Option<String>,
    top: usize,
    offset: usize,
}

impl Listing {
    /// A continuation: the skip token carries the first page's query and where the next page starts.
    fn from_skip_token(tok: &str, headers: &HeaderMap) -> Result<Self, Response> {
        let Some(v) = unb64(tok) else {
            return Err(graph_error(
                headers,
                400,
                "Directory_ExpiredPageToken",
                "The specified page token value has expired and can no longer be included in your request.",
            ));
        };
        Ok(Self {
            filter_type: v["f"].as_str().map(str::to_owned),
            select: v["s"].as_str().map(str::to_owned),
            top: usize::try_from(v["t"].as_u64().unwrap_or(100)).unwrap_or(100),
            offset: usize::try_from(v["o"].as_u64().unwrap_or(0)).unwrap_or(0),
        })
    }

    /// A first page: `$filter`, `$top` and `$select` validated as Graph does.
    fn from_query(q: &HashMap<String, String>, headers: &HeaderMap) -> Result<Self, Response> {
        let filter_type = type_filter(q, headers)?;
        let top = match q.get("$top") {
            None => 100,
            Some(t) => match t.parse::<usize>() {
                Ok(n) if (1..=999).contains(&n) => n,
                _ => {
                    return Err(graph_error(
                        headers,
                        400,
                        "Request_BadRequest",
                        &format!(
                            "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
                        ),
                    ));
                }
            },
        };
        if let Some(sel) = q.get("$select") {
            for p in sel.split(',').map(str::trim) {
                if !SP_PROPERTIES.iter().any(|k| k.eq_ignore_ascii_case(p)) {
                    return Err(graph_error(
                        headers,
                        400,
                        "Request_BadRequest",
                        &format!(
                            "Could not find a property named '{p}' on type 'microsoft.graph.servicePrincipal'."
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            filter_type,
            select: q.get("$select").cloned(),
            top,
            offset: 0,
        })
    }
}

/// The type `$filter=servicePrincipalType eq '...'` asks for; any other filter is refused.
fn type_filter(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Option<String>, Response> {
    let Some(f) = q.get("$filter") else {
        return Ok(None);
    };
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
            Ok(Some(val[1..val.len() - 1].to_owned()))
        }
        _ => Err(graph_error(
            headers,
            400,
            "Request_UnsupportedQuery",
            "Unsupported or invalid query filter clause specified for property 'servicePrincipalType' of resource 'ServicePrincipal'.",
        )),
    }
}

/// One page of the listing, with the `@odata.nextLink` to the next if there is one.
fn list_page(inner: &Inner, l: &Listing, headers: &HeaderMap, empty_page: bool) -> Response {
    let page_size = l
        .top
        .min(inner.config.read().expect("config lock").graph_max_page)
        .max(1);
    let w = inner.world.read().expect("world lock");
    let matching = matching_principals(inner, &w, l.filter_type.as_deref());
    let selected: Option<Vec<String>> = l
        .select
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
        .skip(l.offset)
        .take(take)
        .filter_map(|&i| w.principals.get(i))
        .map(|p| p.to_json_selected(selected.as_deref()))
        .collect();
    let mut body = json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#servicePrincipals{}", l.select.as_ref().map(|s| format!("({s})")).unwrap_or_default()),
        "value": page,
    });
    if l.offset + advance < matching.len() {
        body["@odata.nextLink"] = json!(next_link(inner, l, l.offset + advance));
    }
    let rid = new_id();
    let crid = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| rid.clone(), str::to_owned);
    let items = body["value"].as_array().map_or(0, Vec::len).to_string();
    // The page asked for, whatever the nonce in its link (for the statistics).
    let key = format!(
        "graph-list|{:?}|{:?}|{}|{}",
        l.filter_type, l.select, l.top, l.offset
    );
    respond(200, vec![
        ("x-sim-items", items),
        ("x-sim-key", key),
        ("request-id", rid),
        ("client-request-id", crid),
        ("x-ms-ags-diagnostic", r#"{"ServerInfo":{"DataCenter":"West Europe","Slice":"E","Ring":"5","ScaleUnit":"000","RoleInstance":"SIM"}}"#.to_owned()),
        ("content-type", "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8".to_owned()),
    ], &body)
}

/// Indices into `w.principals` of those whose type is `filter_type` (all without a filter), built once
/// per world (the index is emptied when the world changes): a page of a large directory is then found
/// without filtering the whole directory for every page.
fn matching_principals(
    inner: &Inner,
    w: &model::World,
    filter_type: Option<&str>,
) -> std::sync::Arc<Vec<usize>> {
    let key = filter_type.map(str::to_ascii_lowercase);
    let mut index = inner.graph_index.lock().expect("index lock");
    index
        .entry(key)
        .or_insert_with_key(|key| {
            let matching = w
                .principals
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    key.as_ref()
                        .is_none_or(|t| p.sp_type.eq_ignore_ascii_case(t))
                })
                .map(|(i, _)| i);
            std::sync::Arc::new(matching.collect())
        })
        .clone()
}

/// The absolute `@odata.nextLink` of the page that starts at `offset`.
fn next_link(inner: &Inner, l: &Listing, offset: usize) -> String {
    let nonce = inner.seq.load(Ordering::Relaxed);
    let token =
        b64(&json!({"o": offset, "f": l.filter_type, "s": l.select, "t": l.top, "n": nonce}));
    let mut qs = form_urlencoded::Serializer::new(String::new());
    if let Some(f) = &l.filter_type {
        qs.append_pair("$filter", &format!("servicePrincipalType eq '{f}'"));
    }
    if let Some(s) = &l.select {
        qs.append_pair("$select", s);
    }
    qs.append_pair("$top", &l.top.to_string());
    qs.append_pair("$skiptoken", &token);
    format!("{}/v1.0/servicePrincipals?{}", inner.base_url, qs.finish())
}
