//! Azure Resource Graph: KQL queries over the world's resources, scoped, paged and throttled.

use crate::arm::{api_version, readable};
use crate::kql;
use crate::model::World;
use crate::respond::{arm_error, arm_headers, b64, fxhash, hms, new_id, respond, unb64};
use crate::token::{Audience, authorize};
use crate::{Inner, SimConfig};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Response headers: ARM's, then the quota headers.
type Headers = Vec<(&'static str, String)>;

/// Resource Graph `POST /providers/Microsoft.ResourceGraph/resources` (ARG-SPEC 2024-04-01): the query
/// is evaluated over the tables by [`kql`], scoped to readable subscriptions, paged by `$skipToken`,
/// throttled per user with `x-ms-user-quota-remaining` / `x-ms-user-quota-resets-after` (ARG-THR).
pub(crate) fn resource_graph(
    inner: &Inner,
    method: &Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    empty_page: bool,
) -> Response {
    let tenant = match check_request(inner, method, q, headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let cfg = inner.config.read().expect("config lock").clone();
    let mut h = match take_quota(inner, &cfg, headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let ask = match Ask::parse(body, &h) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let w = inner.world.read().expect("world lock");
    let scope = match scope_of(&w, &tenant, &ask.req, headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (top, offset, fingerprint) = match paging(&ask, &scope, &h) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // A query's result is evaluated once and paged from that snapshot, as a skip token continues the
    // same result set (ARG paging-results); later pages do not re-run the query. The snapshot also
    // answers the same query asked again while the world is unchanged (`with_world` empties the
    // cache): the rows would be the same, and a tenant of a million resources is not evaluated anew
    // for every scan.
    let cached = inner
        .arg_cache
        .lock()
        .expect("cache lock")
        .get(&fingerprint)
        .cloned();
    let data = match cached {
        Some(d) => d,
        None => match evaluate(&w, &ask, &scope) {
            Ok(d) => remember(inner, &fingerprint, d),
            Err(e) => return bad(h, "EvaluationFailure", &e),
        },
    };
    let page_size = top.min(cfg.arg_max_page).max(1);
    let (take, advance) = if empty_page {
        (0, 0)
    } else {
        (page_size, page_size)
    };
    let page: Vec<Value> = data.iter().skip(offset).take(take).cloned().collect();
    let more = offset + advance < data.len() && ask.query.pageable();
    h.push(("x-sim-items", page.len().to_string()));
    // The page asked for, whatever the nonce in its skip token (for the statistics).
    h.push((
        "x-sim-key",
        format!("arg|{fingerprint}|{offset}|{page_size}"),
    ));
    let mut out = page_body(&ask, data.len(), page, more);
    if more {
        let nonce = inner.seq.load(Ordering::Relaxed);
        out["$skipToken"] = json!(b64(
            &json!({"o": offset + advance, "h": fingerprint, "n": nonce})
        ));
    }
    respond(200, h, &out)
}

/// The caller, the api-version, the method and the content type; the caller's tenant if all are right.
fn check_request(
    inner: &Inner,
    method: &Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, Response> {
    let tenant = authorize(inner, headers, Audience::Arm)?;
    api_version(q, headers)?;
    if method != Method::POST {
        return Err(arm_error(headers, 405, "MethodNotAllowed", "Use POST."));
    }
    // A content type other than JSON is answered with HTTP 500 (ARG troubleshoot).
    let json_ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json_ct {
        return Err(arm_error(
            headers,
            500,
            "InternalServerError",
            "Encountered internal server error.",
        ));
    }
    Ok(tenant)
}

/// Counts the query against the caller's quota window: the quota headers for the answer, or the 429.
fn take_quota(inner: &Inner, cfg: &SimConfig, headers: &HeaderMap) -> Result<Headers, Response> {
    let (remaining, resets) = {
        let mut win = inner.arg_window.lock().expect("window lock");
        if win.0.elapsed() >= cfg.arg_window {
            *win = (Instant::now(), 0);
        }
        let resets = cfg.arg_window.saturating_sub(win.0.elapsed());
        if win.1 >= cfg.arg_quota {
            let mut h = arm_headers(headers);
            h.push(("x-ms-user-quota-remaining", "0".into()));
            h.push(("x-ms-user-quota-resets-after", hms(resets)));
            return Err(respond(
                429,
                h,
                &json!({"error": {"code": "RateLimiting", "message": format!("Please provide below info when asking for support: timestamp = {}, correlationId = {}. Details: Client application has been throttled and should not attempt to repeat the request until an amount of time has elapsed. Please see https://aka.ms/resourcegraph-throttling for help.", chrono::Utc::now().to_rfc3339(), new_id())}}),
            ));
        }
        win.1 += 1;
        (cfg.arg_quota - win.1, resets)
    };
    let mut h = arm_headers(headers);
    h.push(("x-ms-user-quota-remaining", remaining.to_string()));
    h.push(("x-ms-user-quota-resets-after", hms(resets)));
    Ok(h)
}

/// Resource Graph's 400 for a query it cannot run, with the detail that says why.
fn bad(h: Headers, detail_code: &str, detail: &str) -> Response {
    respond(
        400,
        h,
        &json!({"error": {"code": "BadRequest", "message": format!("Please provide below info when asking for support: timestamp = {}, correlationId = {}.", chrono::Utc::now().to_rfc3339(), new_id()),
        "details": [{"code": "InvalidQuery", "message": "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error before retrying."}, {"code": detail_code, "message": detail}]}}),
    )
}

/// A request body read: the query parsed, its table known.
struct Ask {
    req: Value,
    query_text: String,
    query: kql::Query,
    /// The query's table, lower-case.
    table: String,
    /// The request's `options` (`Null` when absent).
    opts: Value,
}

impl Ask {
    fn parse(body: &[u8], h: &Headers) -> Result<Self, Response> {
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return Err(bad(
                h.clone(),
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized.",
            ));
        };
        let Some(query_text) = req.get("query").and_then(Value::as_str).map(str::to_owned) else {
            return Err(bad(h.clone(), "MissingQuery", "The query is required."));
        };
        let query = kql::parse(&query_text).map_err(|e| bad(h.clone(), "ParserFailure", &e))?;
        let table = query.table.to_ascii_lowercase();
        if table != "resources" && table != "policyresources" && table != "authorizationresources" {
            return Err(bad(
                h.clone(),
                "UnknownTable",
                &format!("Table '{}' is not supported by the simulator.", query.table),
            ));
        }
        let opts = req.get("options").cloned().unwrap_or(Value::Null);
        Ok(Self {
            req,
            query_text,
            query,
            table,
            opts,
        })
    }
}

/// The subscriptions the query runs over (lower-case): those listed, or all, that the caller can read.
fn scope_of(
    w: &World,
    tenant: &str,
    req: &Value,
    headers: &HeaderMap,
) -> Result<Vec<String>, Response> {
    let listed: Option<Vec<String>> = req.get("subscriptions").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
            .collect()
    });
    let scope: Vec<String> = match &listed {
        Some(l) => l
            .iter()
            .filter(|s| w.subscription(s).is_some_and(|x| readable(w, tenant, x)))
            .cloned()
            .collect(),
        None => w
            .subscriptions
            .iter()
            .filter(|s| readable(w, tenant, s))
            .map(|s| s.id.to_ascii_lowercase())
            .collect(),
    };
    if listed.as_ref().is_some_and(|l| !l.is_empty()) && scope.is_empty() {
        return Err(arm_error(
            headers,
            403,
            "AuthorizationFailed",
            "The client does not have authorization to read any of the requested subscriptions.",
        ));
    }
    Ok(scope)
}

/// `$top`, where the page starts (`$skip` or the skip token's offset) and the result set's fingerprint.
fn paging(ask: &Ask, scope: &[String], h: &Headers) -> Result<(usize, usize, String), Response> {
    let opts = &ask.opts;
    let top = match opts.get("$top") {
        None | Some(Value::Null) => 100,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=1000).contains(&n) => usize::try_from(n).unwrap_or(1000),
            _ => {
                return Err(bad(
                    h.clone(),
                    "InvalidTop",
                    "$top must be between 1 and 1000.",
                ));
            }
        },
    };
    let skip = opts
        .get("$skip")
        .and_then(Value::as_u64)
        .map_or(0, |n| usize::try_from(n).unwrap_or(0));
    let fingerprint = format!("{:x}", fxhash(&format!("{}|{scope:?}", ask.query_text)));
    let offset = match opts.get("$skipToken").and_then(Value::as_str) {
        None => skip,
        Some(t) => match unb64(t) {
            Some(v) if v["h"].as_str() == Some(fingerprint.as_str()) => {
                usize::try_from(v["o"].as_u64().unwrap_or(0)).unwrap_or(0)
            }
            _ => {
                return Err(bad(
                    h.clone(),
                    "InvalidSkipToken",
                    "The skip token is not valid for this query.",
                ));
            }
        },
    };
    Ok((top, offset, fingerprint))
}

/// Runs the query over the table's rows in scope.
fn evaluate(w: &World, ask: &Ask, scope: &[String]) -> Result<Vec<Value>, String> {
    let tenant_id = w.tenant_id.clone();
    let scope_set: std::collections::HashSet<&str> = scope.iter().map(String::as_str).collect();
    let table = ask.table.as_str();
    if table == "authorizationresources" {
        return ask.query.run(authorization_rows(w, &scope_set).into_iter());
    }
    let rows = w
        .resources
        .iter()
        .filter(|(k, r)| {
            let in_table = if r
                .arm_type
                .eq_ignore_ascii_case("Microsoft.Authorization/policyAssignments")
            {
                table == "policyresources"
            } else {
                table == "resources"
            };
            let sub = k.split('/').nth(2).unwrap_or("");
            // Resource Graph honours RBAC: what the caller cannot read is silently left out
            // (ARG overview).
            let denied = w
                .denied_resource_groups
                .iter()
                .any(|rg| k.starts_with(rg.as_str()) && k[rg.len()..].starts_with('/'));
            in_table
                && k.starts_with("/subscriptions/")
                && scope_set.contains(sub)
                && !w.arg_lag.contains(*k)
                && !denied
        })
        .map(|(_, r)| {
            // Resource Graph reads with the newest stable api-version (ARG overview); only
            // types whose identity came later need to know which.
            let stable = r
                .identity_since
                .as_ref()
                .and_then(|_| w.newest_stable_version(&r.arm_type));
            r.arg_row(&tenant_id, stable.as_deref())
        });
    ask.query.run(rows)
}

/// `authorizationresources` (ARG-TABLES): the role assignments of the subscriptions in scope, and the
/// built-in role definitions as each subscription in scope sees them (ids under the subscription, as
/// role assignments name them; `properties.roleName`, `properties.type = BuiltInRole`).
fn authorization_rows(w: &World, scope: &std::collections::HashSet<&str>) -> Vec<Value> {
    let mut rows = Vec::new();
    let sub_of = |id: &str| {
        id.split('/')
            .nth(2)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default()
    };
    for a in &w.role_assignments {
        let sub = sub_of(&a.scope);
        if !scope.contains(sub.as_str()) {
            continue;
        }
        let name = a.id.rsplit('/').next().unwrap_or_default();
        rows.push(serde_json::json!({
            "id": a.id,
            "name": name,
            "type": "microsoft.authorization/roleassignments",
            "tenantId": w.tenant_id,
            "subscriptionId": sub,
            "resourceGroup": "",
            "properties": {
                "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}", a.role),
                "principalId": a.principal_id,
                "principalType": "ServicePrincipal",
                "scope": a.scope,
                "createdOn": "2024-05-01T09:00:00.0000000Z",
            },
        }));
    }
    for sub in scope {
        for (guid, role) in crate::model::BUILT_IN_ROLES {
            rows.push(serde_json::json!({
                "id": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
                "name": guid,
                "type": "microsoft.authorization/roledefinitions",
                "tenantId": w.tenant_id,
                "subscriptionId": sub,
                "properties": {"roleName": role, "type": "BuiltInRole"},
            }));
        }
    }
    rows
}

/// Keeps a result set for its skip tokens.
fn remember(inner: &Inner, fingerprint: &str, data: Vec<Value>) -> Arc<Vec<Value>> {
    let d = Arc::new(data);
    let mut cache = inner.arg_cache.lock().expect("cache lock");
    if cache.len() >= 64 {
        cache.clear();
    }
    cache.insert(fingerprint.to_owned(), d.clone());
    d
}

/// The answer's body for a page (rows as objects, or as a table when `resultFormat` asks).
fn page_body(ask: &Ask, total: usize, page: Vec<Value>, more: bool) -> Value {
    let pageable = ask.query.pageable();
    let mut out = json!({
        "totalRecords": total,
        "count": page.len(),
        "resultTruncated": if more || pageable { "false" } else { "true" },
        "facets": [],
    });
    if ask.opts.get("resultFormat").and_then(Value::as_str) == Some("table") {
        let cols: Vec<String> = page
            .first()
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let rows: Vec<Value> = page
            .iter()
            .map(|r| Value::Array(cols.iter().map(|c| r[c].clone()).collect()))
            .collect();
        out["data"] = json!({"columns": cols.iter().map(|c| json!({"name": c, "type": "string"})).collect::<Vec<_>>(), "rows": rows});
    } else {
        out["data"] = Value::Array(page);
    }
    out
}
