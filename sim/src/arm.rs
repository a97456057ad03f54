//! Azure Resource Manager: subscriptions, resource groups, management groups, providers and resource
//! GETs, behind ARM's read buckets.

mod resource;

use crate::Inner;
use crate::model::{self, SubAccess, World};
use crate::path;
use crate::respond::{arm_error, arm_headers, respond};
use crate::token::{Audience, authorize};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::Response;
use resource::resource_get;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Instant;

pub(crate) fn readable(w: &World, tenant: &str, sub: &model::SimSubscription) -> bool {
    sub.access == SubAccess::Reader && w.tenant_id == tenant
}

/// The answer ARM gives for a subscription the caller cannot use, if any.
fn subscription_gate(
    w: &World,
    headers: &HeaderMap,
    sub_id: &str,
    action: &str,
    scope: &str,
) -> Option<Response> {
    let Some(sub) = w.subscription(sub_id) else {
        return Some(arm_error(
            headers,
            404,
            "SubscriptionNotFound",
            &format!("The subscription '{sub_id}' could not be found."),
        ));
    };
    match &sub.access {
        SubAccess::Reader => None,
        SubAccess::Deleted => Some(arm_error(
            headers,
            404,
            "SubscriptionNotFound",
            &format!("The subscription '{sub_id}' could not be found."),
        )),
        // TRANSFER / .NET SDK capture (docs/azure-behaviour.md §4).
        SubAccess::Transferred { to_tenant } => Some(arm_error(
            headers,
            401,
            "InvalidAuthenticationTokenTenant",
            &format!(
                "The access token is from the wrong issuer 'https://sts.windows.net/{}/'. It must match the tenant 'https://sts.windows.net/{to_tenant}/' associated with this subscription. Please use the authority (URL) 'https://login.windows.net/{to_tenant}' to get the token. Note, if the subscription is transferred to another tenant there is no impact to the services, but information about new tenant could take time to propagate (up to an hour). If you just transferred your subscription and see this error message, please try back later.",
                w.tenant_id
            ),
        )),
        SubAccess::NoAccess => Some(authorization_failed(w, headers, action, scope)),
    }
}

fn authorization_failed(w: &World, headers: &HeaderMap, action: &str, scope: &str) -> Response {
    arm_error(
        headers,
        403,
        "AuthorizationFailed",
        &format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            w.client_id, w.client_id
        ),
    )
}

pub(crate) fn api_version<'a>(
    q: &'a HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<&'a str, Response> {
    match q.get("api-version") {
        Some(v) if !v.is_empty() => Ok(v),
        // Azure REST API guidelines: 400 MissingApiVersionParameter.
        _ => Err(arm_error(
            headers,
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
    }
}

/// ARM behind its read buckets (ARM-THR): a token per read from the subscription's bucket (tenant-level
/// reads from the tenant's), `x-ms-ratelimit-remaining-subscription-reads` (or `-tenant-reads`) on every
/// answer, 429 with `Retry-After` when the bucket is empty.
pub(crate) fn arm_metered(
    inner: &Inner,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let (key, header) = match segs.as_slice() {
        [s, id, _, ..] if s.eq_ignore_ascii_case("subscriptions") => (
            format!("sub:{}", id.to_ascii_lowercase()),
            "x-ms-ratelimit-remaining-subscription-reads",
        ),
        _ => ("tenant".to_owned(), "x-ms-ratelimit-remaining-tenant-reads"),
    };
    let (cap, rate) = inner.config.read().expect("config lock").arm_bucket;
    let remaining = {
        let mut buckets = inner.arm_buckets.lock().expect("bucket lock");
        let now = Instant::now();
        let b = buckets.entry(key).or_insert((cap, now));
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(cap);
        b.1 = now;
        if b.0 < 1.0 {
            let wait = ((1.0 - b.0) / rate).ceil().max(1.0);
            let mut res = arm_error(
                headers,
                429,
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for operation type - Read_ObservationWindow_00:00:10.",
            );
            res.headers_mut()
                .insert("retry-after", HeaderValue::from(wait as u64));
            res.headers_mut().insert(header, HeaderValue::from(0u64));
            return res;
        }
        b.0 -= 1.0;
        b.0.floor() as u64
    };
    let mut res = arm(inner, method, path, q, headers);
    res.headers_mut()
        .insert(header, HeaderValue::from(remaining));
    res
}

/// ARM: `GET /subscriptions`, a subscription, its resource groups, providers, resource GETs and
/// collection lists. Paths are read by the simulator's own [`path`] reader, never the product's.
fn arm(
    inner: &Inner,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let tenant = match authorize(inner, headers, Audience::Arm) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let version = match api_version(q, headers) {
        Ok(v) => v.to_owned(),
        Err(r) => return r,
    };
    if method != Method::GET {
        return arm_error(
            headers,
            405,
            "MethodNotAllowed",
            "The simulator serves reads only.",
        );
    }
    let w = inner.world.read().expect("world lock");
    let route = match path::parse(path) {
        Ok(r) => r,
        Err(why) => {
            return arm_error(
                headers,
                400,
                "InvalidRequestUri",
                &format!("The request URI '{path}' is not valid: {why}."),
            );
        }
    };
    match route {
        path::Route::Subscriptions => subscription_list(inner, &w, &tenant, q, &version, headers),
        path::Route::Subscription(sub) => subscription_get(&w, headers, &sub, path),
        path::Route::ResourceGroups(sub) => resource_group_list(&w, headers, &sub, path),
        path::Route::ResourceGroup {
            subscription,
            group,
        } => resource_group_get(&w, headers, &subscription, &group, path),
        path::Route::ManagementGroup(mg) => management_group_get(&w, headers, &mg),
        path::Route::Provider {
            subscription,
            namespace,
        } => provider_get(&w, headers, subscription.as_deref(), &namespace),
        path::Route::Resource(p) => resource_get(&w, &tenant, path, &p, &version, headers),
    }
}

/// RES-SPEC `GetSubscription`: the same object the list holds.
fn subscription_get(w: &World, headers: &HeaderMap, sub: &str, path: &str) -> Response {
    if let Some(r) = subscription_gate(
        w,
        headers,
        sub,
        "Microsoft.Resources/subscriptions/read",
        path,
    ) {
        return r;
    }
    match w.subscription(sub) {
        Some(s) => respond(200, arm_headers(headers), &subscription_json(w, s)),
        None => arm_error(headers, 404, "SubscriptionNotFound", "Not found."),
    }
}

/// RES-SPEC `ResourceGroups_List`.
fn resource_group_list(w: &World, headers: &HeaderMap, sub: &str, path: &str) -> Response {
    if let Some(r) = subscription_gate(
        w,
        headers,
        sub,
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        path,
    ) {
        return r;
    }
    let prefix = format!("/subscriptions/{sub}/resourcegroups/").to_ascii_lowercase();
    let value: Vec<Value> = w
        .resource_groups
        .iter()
        .filter(|k| k.starts_with(&prefix) && !w.denied_resource_groups.contains(*k))
        .map(|k| resource_group_json(sub, &k[prefix.len()..]))
        .collect();
    respond(200, arm_headers(headers), &json!({ "value": value }))
}

/// RES-SPEC `ResourceGroups_Get`.
fn resource_group_get(
    w: &World,
    headers: &HeaderMap,
    subscription: &str,
    group: &str,
    path: &str,
) -> Response {
    let action = "Microsoft.Resources/subscriptions/resourceGroups/read";
    if let Some(r) = subscription_gate(w, headers, subscription, action, path) {
        return r;
    }
    let key = format!("/subscriptions/{subscription}/resourcegroups/{group}").to_ascii_lowercase();
    if w.denied_resource_groups.contains(&key) {
        return authorization_failed(w, headers, action, path);
    }
    if !w.resource_groups.contains(&key) {
        return arm_error(
            headers,
            404,
            "ResourceGroupNotFound",
            &format!("Resource group '{group}' could not be found."),
        );
    }
    respond(
        200,
        arm_headers(headers),
        &resource_group_json(subscription, group),
    )
}

/// A management group.
fn management_group_get(w: &World, headers: &HeaderMap, mg: &str) -> Response {
    if w.management_groups.contains(&mg.to_ascii_lowercase()) {
        respond(
            200,
            arm_headers(headers),
            &json!({
                "id": format!("/providers/Microsoft.Management/managementGroups/{mg}"),
                "type": "Microsoft.Management/managementGroups",
                "name": mg,
                "properties": { "tenantId": w.tenant_id, "displayName": mg },
            }),
        )
    } else {
        arm_error(
            headers,
            404,
            "ManagementGroupNotFound",
            &format!("Management group '{mg}' not found."),
        )
    }
}

/// Providers: /subscriptions/{s}/providers/{ns} and /providers/{ns} (RES-SPEC GetProvider.json,
/// GetNamedProviderAtTenant.json).
fn provider_get(
    w: &World,
    headers: &HeaderMap,
    subscription: Option<&str>,
    namespace: &str,
) -> Response {
    let prefix = match subscription {
        Some(sub) => {
            if let Some(r) = subscription_gate(
                w,
                headers,
                sub,
                "Microsoft.Resources/subscriptions/providers/read",
                &format!("/subscriptions/{sub}"),
            ) {
                return r;
            }
            format!("/subscriptions/{sub}/providers/")
        }
        None => "/providers/".to_owned(),
    };
    let Some((name, types)) = w
        .providers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(namespace))
    else {
        return arm_error(
            headers,
            404,
            "InvalidResourceNamespace",
            &format!("The resource namespace '{namespace}' is invalid."),
        );
    };
    let rt: Vec<Value> = types.iter().map(|(t, v)| json!({"resourceType": t, "locations": ["West Europe", "East US", "Sweden Central"], "apiVersions": v, "capabilities": "None"})).collect();
    respond(
        200,
        arm_headers(headers),
        &json!({
            "id": format!("{prefix}{name}"), "namespace": name, "registrationState": "Registered",
            "registrationPolicy": "RegistrationRequired", "resourceTypes": rt,
        }),
    )
}

/// A subscription as `GET /subscriptions` lists it (RES-SPEC `GetSubscriptions.json`).
fn subscription_json(w: &World, s: &model::SimSubscription) -> Value {
    json!({
        "id": format!("/subscriptions/{}", s.id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": s.id,
        "tenantId": w.tenant_id,
        "displayName": s.display_name,
        "state": "Enabled",
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "EnterpriseAgreement_2014-09-01", "spendingLimit": "Off"},
        "tags": {},
    })
}

/// A resource group as ARM answers it (RES-SPEC `ResourceGroups_Get`).
fn resource_group_json(sub: &str, group: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{sub}/resourceGroups/{group}"),
        "name": group,
        "type": "Microsoft.Resources/resourceGroups",
        "location": "westeurope",
        "properties": { "provisioningState": "Succeeded" },
    })
}

/// `GET /subscriptions` (RES-SPEC subscriptions.json, paged by nextLink).
fn subscription_list(
    inner: &Inner,
    w: &World,
    tenant: &str,
    q: &HashMap<String, String>,
    version: &str,
    headers: &HeaderMap,
) -> Response {
    let page = inner
        .config
        .read()
        .expect("config lock")
        .subscriptions_page
        .max(1);
    let offset: usize = q
        .get("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let visible: Vec<&model::SimSubscription> = w
        .subscriptions
        .iter()
        .filter(|s| readable(w, tenant, s))
        .collect();
    let value: Vec<Value> = visible
        .iter()
        .skip(offset)
        .take(page)
        .map(|s| subscription_json(w, s))
        .collect();
    let mut body = json!({ "value": value, "count": {"type": "Total", "value": visible.len()} });
    if offset + page < visible.len() {
        body["nextLink"] = json!(format!(
            "{}/subscriptions?api-version={version}&%24skiptoken={}",
            inner.base_url,
            offset + page
        ));
    }
    respond(200, arm_headers(headers), &body)
}
