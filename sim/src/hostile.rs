//! Hostile answers: what gateways, proxies, redirects, impostors, older api-versions and extreme header
//! values make of Microsoft's answers, so tests can prove a client never turns one into an orphan and
//! never panics on one. The [`Fault`] variants say which real component produces each; this module
//! builds the answers, lists them for seeded fault plans ([`Fault::hostile_answers`],
//! [`Fault::extreme_numbers`]), and builds a tenant whose healthy identities sit behind each of them
//! ([`HostileWorld`]).

mod world;

pub use world::{Behind, HostileWorld};

use crate::model::SimResource;
use crate::respond::{arm_error, arm_headers, graph_error, new_id, respond};
use crate::{
    Api, FOREIGN_LINK_MARKER, Fault, Inner, LinkTo, REDIRECT_TARGET_PREFIX, RedirectTo,
    StrayRequest, path,
};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;

/// ARM 404 error codes that say nothing about the requested resource itself, with the message ARM or
/// the resource provider sends. Which of them really come with 404:
///
/// - `SubscriptionNotFound`: 404 (live capture, docs/azure-behaviour.md §4; Storage RP common error codes,
///   learn.microsoft.com `rest/api/storagerp/srp_error_codes_common`: "Not Found (404) The subscription
///   specified is not found").
/// - `SubscriptionStateForbidden`: 404, "The subscription is not ready for storage account operations"
///   (same Storage RP page).
/// - `InvalidResourceNamespace`: 404 (Grafana's Azure Monitor test fixture of an ARM answer, index id
///   91879878; the simulator's own providers API answers it so too).
/// - `InvalidResourceType`: 404 (azure-sdk-for-net README capture, docs/azure-behaviour.md §4).
/// - `NoRegisteredProviderFound`: documented with **400** (Data Factory troubleshooting capture with
///   ARM's headers, index id 962425353; docs/azure-behaviour.md §4); a 404 with it is what a gateway or an RP that
///   maps errors differently would send (**unconfirmed** as 404).
/// - `InvalidApiVersionParameter` (the api-version kind of not-found): captured with **400** (index ids
///   42478131843, 69235348456); as a 404 **unconfirmed**.
/// - `LocationNotAvailableForResourceType`: seen only inside deployment error details, status not shown
///   (index ids 55907643816, 5823644535); as a 404 **unconfirmed**.
/// - `PrincipalNotFound`: 404 in Juju's Azure provider test mock "based on Azure/azure-powershell#655"
///   (index id 421901767); 400 in a Microsoft Tech Community post on Azure SQL ("HTTPS status code 400").
/// - `ManagementGroupNotFound`: code seen in Bicep/ResourceModules notes ("The management group
///   'EXAMPLEMG' cannot be found", index id 1349974279), status not shown (**unconfirmed**).
/// - `TenantNotFound`: 404 from Microsoft Graph ("Tenant is not found.", index id 58988353910); from ARM
///   **unconfirmed**.
pub const NON_PROVING_404: &[(&str, &str)] = &[
    (
        "SubscriptionNotFound",
        "The subscription '{sub}' could not be found.",
    ),
    (
        "SubscriptionStateForbidden",
        "The subscription is not ready for storage account operations.",
    ),
    (
        "InvalidResourceNamespace",
        "The resource namespace '{ns}' is invalid.",
    ),
    (
        "InvalidResourceType",
        "The resource type '{type}' could not be found in the namespace '{ns}' for api version '{version}'.",
    ),
    (
        "NoRegisteredProviderFound",
        "No registered resource provider found for location 'westeurope' and API version '{version}' for type '{type}'.",
    ),
    (
        "InvalidApiVersionParameter",
        "The api-version '{version}' is invalid.",
    ),
    (
        "LocationNotAvailableForResourceType",
        "The provided location 'westeurope' is not available for resource type '{ns}/{type}'.",
    ),
    (
        "PrincipalNotFound",
        "Principal {principal} does not exist in the directory {tenant}.",
    ),
    (
        "ManagementGroupNotFound",
        "The management group '{mg}' cannot be found.",
    ),
    ("TenantNotFound", "Tenant is not found."),
];

impl Fault {
    /// Every hostile answer of the kinds that stand between a client and the truth: 200s that are not
    /// the resource, redirects, 404s that prove nothing, foreign paging links. For seeded fault plans.
    pub fn hostile_answers() -> Vec<Fault> {
        let mut v = vec![
            Fault::GatewayEmptyObject,
            Fault::CollectionBody,
            Fault::OtherResourceBody,
            Fault::NotJson,
            Fault::ProxyNotFound { html: true },
            Fault::ProxyNotFound { html: false },
            Fault::ImitationNotFound,
        ];
        for status in [301, 302, 307, 308] {
            for to in [
                RedirectTo::Collection,
                RedirectTo::OtherHost,
                RedirectTo::OtherPath,
            ] {
                v.push(Fault::Redirect { status, to });
            }
        }
        v.extend(NON_PROVING_404.iter().map(|(code, _)| Fault::ArmNotFound {
            code: (*code).to_owned(),
        }));
        v.push(Fault::ForeignNextLink(LinkTo::OtherHost));
        v.push(Fault::ForeignNextLink(LinkTo::OtherPath));
        v
    }

    /// Extreme and malformed numbers in wait hints, quota headers and token lifetimes.
    pub fn extreme_numbers() -> Vec<Fault> {
        let th = |header: &str, value: &str| Fault::ThrottleHeader {
            header: header.to_owned(),
            value: value.to_owned(),
        };
        let qh = |header: &str, value: &str| Fault::QuotaHeader {
            header: header.to_owned(),
            value: value.to_owned(),
        };
        let mut v = Vec::new();
        for value in [
            "99999999999999999999",
            "1e308",
            "-5",
            "NaN",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            v.push(th("retry-after", value));
        }
        for value in ["99999999999999999999", "1e308"] {
            v.push(th("retry-after-ms", value));
            v.push(th("x-ms-retry-after-ms", value));
        }
        for value in [
            "99999999999:00:00",
            "18446744073709551615:59:59",
            "00:00:99999999999999",
        ] {
            v.push(th("x-ms-user-quota-resets-after", value));
            v.push(qh("x-ms-user-quota-resets-after", value));
        }
        for value in ["-5", "-9223372036854775808", "99999999999999999999"] {
            v.push(qh("x-ms-user-quota-remaining", value));
            v.push(qh("x-ms-ratelimit-remaining-subscription-reads", value));
        }
        for value in [
            json!(u64::MAX),
            json!(-1),
            json!(1e30),
            json!("99999999999999999999"),
            json!(0),
        ] {
            v.push(Fault::TokenExpiresIn(value));
        }
        v
    }
}

/// The nginx-style page a reverse proxy answers for a path it has no route for.
const PROXY_404_PAGE: &str = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn target_of(parts: &Parts) -> String {
    match parts.uri.query() {
        Some(q) => format!("{}?{q}", parts.uri.path()),
        None => parts.uri.path().to_owned(),
    }
}

/// The path of the collection a resource path belongs to (`None` when it names no resource).
pub(super) fn collection_path(raw: &str) -> Option<String> {
    match path::parse(raw) {
        Ok(path::Route::Resource(p)) => p.collection().map(|c| c.to_path()),
        _ => None,
    }
}

fn plain(status: u16, content_type: Option<&'static str>, body: &'static str) -> Response {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type {
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static(ct));
    }
    res
}

/// Fills a [`NON_PROVING_404`] message from what the request names.
fn not_proving_message(code: &str, raw_path: &str, query: &str, tenant: &str) -> String {
    let template = NON_PROVING_404
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code))
        .map_or("The requested item could not be found.", |(_, m)| m);
    let version = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let (sub, mg, ns, ty) = match path::parse(raw_path) {
        Ok(path::Route::Resource(p)) => (
            p.subscription().unwrap_or("").to_owned(),
            p.management_group().unwrap_or("").to_owned(),
            p.namespace().to_owned(),
            p.type_path(),
        ),
        Ok(path::Route::Subscription(s) | path::Route::ResourceGroups(s)) => {
            (s, String::new(), String::new(), String::new())
        }
        Ok(path::Route::Provider {
            subscription,
            namespace,
        }) => (
            subscription.unwrap_or_default(),
            String::new(),
            namespace,
            String::new(),
        ),
        _ => Default::default(),
    };
    template
        .replace("{sub}", &sub)
        .replace("{mg}", &mg)
        .replace("{ns}", &ns)
        .replace("{type}", &ty)
        .replace("{version}", &version)
        .replace("{principal}", &new_id())
        .replace("{tenant}", tenant)
}

/// Answers that replace the service's answer outright.
pub(super) fn answer(inner: &Inner, api: Api, fault: &Fault, parts: &Parts) -> Response {
    let headers = &parts.headers;
    let query = parts.uri.query().unwrap_or("");
    match fault {
        Fault::GatewayEmptyObject => plain(200, Some("application/json; charset=utf-8"), "{}"),
        Fault::Redirect { status, to } => redirect(inner, *status, *to, parts),
        Fault::ProxyNotFound { html: true } => plain(404, Some("text/html"), PROXY_404_PAGE),
        Fault::ProxyNotFound { html: false } => plain(404, None, ""),
        Fault::ImitationNotFound => {
            let (name, rg) = match path::parse(parts.uri.path()) {
                Ok(path::Route::Resource(p)) => (
                    format!("{}/{}", p.full_type(), p.name().unwrap_or("")),
                    p.resource_group().unwrap_or("").to_owned(),
                ),
                _ => (parts.uri.path().to_owned(), String::new()),
            };
            respond(
                404,
                vec![],
                &json!({"error": {"code": "ResourceNotFound", "message": format!(
                    "The Resource '{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                )}}),
            )
        }
        Fault::ArmNotFound { code } => {
            let tenant = inner.world.read().expect("world lock").tenant_id.clone();
            arm_error(
                headers,
                404,
                code,
                &not_proving_message(code, parts.uri.path(), query, &tenant),
            )
        }
        Fault::ThrottleHeader { header, value } => throttle_with(api, headers, header, value),
        // Not an answer of its own: served by `handle` as the service's answer.
        _ => arm_error(headers, 500, "InternalServerError", "Unexpected fault."),
    }
}

/// A redirect with an empty body to where `to` says.
fn redirect(inner: &Inner, status: u16, to: RedirectTo, parts: &Parts) -> Response {
    let query = parts.uri.query().unwrap_or("");
    let location = match to {
        RedirectTo::Collection => {
            let c =
                collection_path(parts.uri.path()).unwrap_or_else(|| parts.uri.path().to_owned());
            format!("{}{c}?{query}", inner.base_url)
        }
        RedirectTo::OtherHost => format!("{}{}", inner.decoy_url, target_of(parts)),
        RedirectTo::OtherPath => format!(
            "{}{REDIRECT_TARGET_PREFIX}{}",
            inner.base_url,
            target_of(parts)
        ),
    };
    let mut res = plain(status, None, "");
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert("location", v);
    }
    res
}

/// The service's 429 with `header: value` as its only wait hint.
fn throttle_with(api: Api, headers: &HeaderMap, header: &str, value: &str) -> Response {
    let mut res = match api {
        Api::Graph => graph_error(headers, 429, "TooManyRequests", "Please retry again later."),
        Api::Token => respond(
            429,
            vec![],
            &json!({"error": "temporarily_unavailable", "error_description": "AADSTS50196: The server has been throttled."}),
        ),
        _ => arm_error(
            headers,
            429,
            "TooManyRequests",
            "The request is being throttled. Please retry later.",
        ),
    };
    // Resource Graph's 429s carry both quota headers (ARG-THR).
    if api == Api::ResourceGraph && header.eq_ignore_ascii_case("x-ms-user-quota-resets-after") {
        res.headers_mut()
            .insert("x-ms-user-quota-remaining", HeaderValue::from_static("0"));
    }
    insert_header(res.headers_mut(), header, value);
    res
}

fn insert_header(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        axum::http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
        HeaderValue::from_str(value),
    ) {
        h.insert(n, v);
    }
}

/// 200 with another resource's body, as ARM answers for that other resource: one of the same type in
/// the same resource group if there is one, else of the same type, else any, else a made-up twin.
pub(super) fn other_resource(
    inner: &Inner,
    raw: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let w = inner.world.read().expect("world lock");
    let version = q.get("api-version").map(String::as_str);
    let Ok(path::Route::Resource(p)) = path::parse(raw) else {
        return arm_error(headers, 400, "InvalidRequestUri", "Not a resource.");
    };
    let key = p.key();
    let parsed: Vec<(&SimResource, path::ResourcePath)> = w
        .resources
        .iter()
        .filter(|(k, _)| **k != key)
        .filter_map(|(_, r)| match path::parse(&r.id) {
            Ok(path::Route::Resource(m)) => Some((r, m)),
            _ => None,
        })
        .collect();
    let same_type = |m: &path::ResourcePath| m.full_type().eq_ignore_ascii_case(&p.full_type());
    let pick = parsed
        .iter()
        .find(|(_, m)| {
            same_type(m)
                && m.resource_group()
                    .zip(p.resource_group())
                    .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
        })
        .or_else(|| parsed.iter().find(|(_, m)| same_type(m)))
        .or_else(|| parsed.first())
        .map(|(r, _)| (*r).clone());
    let other = pick.unwrap_or_else(|| SimResource {
        id: format!("{}-twin", p.to_path()),
        arm_type: p.full_type(),
        location: "westeurope".into(),
        system_principal: Some(new_id()),
        uami_principal: None,
        uami_client_id: None,
        kind: None,
        identity_since: None,
    });
    respond(
        200,
        arm_headers(headers),
        &other.body_at(&w.tenant_id, version),
    )
}

/// Records a request that arrived where it should not have.
pub(super) fn record_stray(inner: &Inner, place: &'static str, parts: &Parts, body: &[u8]) {
    let client_secret = form_urlencoded::parse(body).any(|(k, _)| k == "client_secret");
    inner
        .strays
        .lock()
        .expect("strays lock")
        .push(StrayRequest {
            place,
            method: parts.method.to_string(),
            target: target_of(parts),
            authorization: parts.headers.contains_key("authorization"),
            client_secret,
        });
}

/// The redirect target and the decoy host: record the request, then answer as an impostor would, with an
/// ARM-looking 404 and made-up request ids (the answer that would do the most harm to a client that
/// followed).
pub(super) async fn stray(inner: &Inner, place: &'static str, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    record_stray(inner, place, &parts, &bytes);
    arm_error(
        &parts.headers,
        404,
        "ResourceNotFound",
        "The Resource was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )
}

/// Faults that change the service's real answer: a header, the token lifetime, the paging link.
pub(super) async fn rewrite(
    inner: &Inner,
    api: Api,
    fault: &Fault,
    parts: &Parts,
    res: Response,
) -> Response {
    if let Fault::QuotaHeader { header, value } = fault {
        let mut res = res;
        insert_header(res.headers_mut(), header, value);
        return res;
    }
    if res.status() != StatusCode::OK {
        return res;
    }
    let (mut head, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(head, Body::from(bytes));
    };
    match fault {
        Fault::TokenExpiresIn(x) => v["expires_in"] = x.clone(),
        Fault::ForeignNextLink(to) => {
            let key = if api == Api::Graph {
                "@odata.nextLink"
            } else {
                "nextLink"
            };
            // Where the real link pointed (path and query), or the request itself on a last page.
            let real = v
                .get(key)
                .or_else(|| v.get("@odata.deltaLink"))
                .and_then(Value::as_str)
                .and_then(|l| url::Url::parse(l).ok())
                .map(|u| match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_owned(),
                })
                .unwrap_or_else(|| target_of(parts));
            let link = match to {
                LinkTo::OtherHost => format!("{}{real}", inner.decoy_url),
                LinkTo::OtherPath if api == Api::Graph => format!(
                    "{}/v1.0/users?$skiptoken={FOREIGN_LINK_MARKER}",
                    inner.base_url
                ),
                LinkTo::OtherPath => {
                    let sub = v
                        .pointer("/value/0/subscriptionId")
                        .and_then(Value::as_str)
                        .unwrap_or("00000000-0000-0000-0000-000000000000");
                    format!(
                        "{}/subscriptions/{sub}/resourceGroups?api-version=2022-12-01&%24skiptoken={FOREIGN_LINK_MARKER}",
                        inner.base_url
                    )
                }
            };
            if let Some(o) = v.as_object_mut() {
                o.remove("@odata.deltaLink");
                o.insert(key.to_owned(), json!(link));
            }
        }
        _ => {}
    }
    head.headers.remove("content-length");
    Response::from_parts(head, Body::from(v.to_string()))
}
