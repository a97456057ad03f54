//! The request pipeline: classify a request, pick its fault, dispatch it to the service that answers it,
//! and apply the faults that change the answer on its way out.

use crate::arm::arm_metered;
use crate::credentials::token;
use crate::faults::{ArmRoute, Fault, ReqInfo, fault_response, take_fault};
use crate::graph::graph;
use crate::resource_graph::resource_graph;
use crate::respond::{arm_error, fxhash, graph_error, respond};
use crate::stats::STATS_PATH;
use crate::{Api, FOREIGN_LINK_MARKER, Inner, REDIRECT_TARGET_PREFIX, hostile, path};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn classify_route(method: &Method, path: &str) -> Option<Api> {
    let lower = path.to_ascii_lowercase();
    if method == Method::POST && lower.ends_with("/oauth2/v2.0/token")
        || method == Method::GET
            && (lower == crate::credentials::IMDS_PATH
                || lower == crate::credentials::APP_SERVICE_PATH)
    {
        Some(Api::Token)
    } else if lower.starts_with("/v1.0/") {
        Some(Api::Graph)
    } else if lower == "/providers/microsoft.resourcegraph/resources" {
        Some(Api::ResourceGraph)
    } else if lower.starts_with("/subscriptions") || lower.starts_with("/providers/") {
        Some(Api::Arm)
    } else {
        None
    }
}

/// Serves one request: see the module doc for the steps.
pub(crate) async fn handle(inner: Arc<Inner>, req: Request<Body>) -> Response {
    if req.uri().path().starts_with(REDIRECT_TARGET_PREFIX) {
        return hostile::stray(&inner, "redirect target", req).await;
    }
    if req.uri().path() == STATS_PATH {
        let reset = req.uri().query().is_some_and(|q| q.contains("reset=true"));
        return respond(200, Vec::new(), &inner.stats(reset).to_json());
    }
    let (parts, body) = req.into_parts();
    if parts
        .uri
        .query()
        .is_some_and(|q| q.contains(FOREIGN_LINK_MARKER))
    {
        hostile::record_stray(&inner, "foreign link", &parts, &[]);
    }
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let api = classify_route(&parts.method, &path);
    // The time the service takes before it answers (docs/azure-behaviour.md §11).
    let latency = {
        let c = inner.config.read().expect("config lock");
        c.latency + api.map_or(std::time::Duration::ZERO, |a| c.latencies.request(a))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let Some(api) = api else {
        return arm_error(
            &parts.headers,
            404,
            "NotFound",
            "The requested path is not served here.",
        );
    };
    inner.requests[api as usize].fetch_add(1, Ordering::Relaxed);
    inner.seq.fetch_add(1, Ordering::Relaxed);
    // ARM accepts request bodies up to 4 MB (RPC).
    let Ok(bytes) = axum::body::to_bytes(body, 4 * 1024 * 1024).await else {
        return arm_error(
            &parts.headers,
            413,
            "RequestEntityTooLarge",
            "The request body is larger than 4 MB.",
        );
    };
    let target = format!("{path}?{}", parts.uri.query().unwrap_or(""));
    let info = req_info(api, &path, &query, &bytes);
    let fault = take_fault(&inner, &info, &target);
    let res = match answer_instead(&inner, api, fault.as_ref(), &parts).await {
        Some(res) => res,
        None => {
            let res = serve(&inner, api, fault.as_ref(), &parts, &path, &query, &bytes);
            let res = charge_per_item(&inner, api, res).await;
            change_answer(&inner, api, fault, &parts, res).await
        }
    };
    count(
        &inner,
        &info,
        &format!("{} {target}", parts.method),
        &bytes,
        res,
    )
}

/// Counts the answered request for [`crate::stats`]: what it asked for is the handler's `x-sim-key`
/// (pages, whose links carry a nonce), else its `request` (method, path and query) and body.
fn count(inner: &Inner, info: &ReqInfo, request: &str, body: &[u8], mut res: Response) -> Response {
    let key = match res.headers_mut().remove("x-sim-key") {
        Some(k) => fxhash(k.to_str().unwrap_or_default()),
        None => fxhash(&format!("{request}|{}", String::from_utf8_lossy(body))),
    };
    inner.stats.lock().expect("stats lock").note(
        info.api,
        info.arm_route,
        res.status().as_u16(),
        key,
    );
    res
}

/// What fault selection needs to know of a request.
fn req_info(api: Api, path: &str, query: &HashMap<String, String>, body: &[u8]) -> ReqInfo {
    let arm_route = match (api, path::parse(path)) {
        (Api::Arm, Ok(path::Route::Subscriptions)) => ArmRoute::SubscriptionList,
        (Api::Arm, Ok(path::Route::Resource(r))) if !r.is_collection() => ArmRoute::Resource,
        _ => ArmRoute::Other,
    };
    ReqInfo {
        api,
        has_skip_token: query.contains_key("$skiptoken")
            || (api == Api::ResourceGraph && body.windows(10).any(|w| w == b"$skipToken")),
        arm_route,
    }
}

/// The answer of a fault that answers instead of the service, if `fault` is one; a slow answer waits
/// here and then lets the service answer.
async fn answer_instead(
    inner: &Inner,
    api: Api,
    fault: Option<&Fault>,
    parts: &Parts,
) -> Option<Response> {
    match fault? {
        f @ (Fault::Throttle { .. }
        | Fault::Status(_)
        | Fault::ExpiredPageToken
        | Fault::SkipTokenError
        | Fault::NotJson) => Some(fault_response(api, f, &parts.headers)),
        f @ (Fault::GatewayEmptyObject
        | Fault::Redirect { .. }
        | Fault::ProxyNotFound { .. }
        | Fault::ImitationNotFound
        | Fault::ArmNotFound { .. }
        | Fault::ThrottleHeader { .. }) => Some(hostile::answer(inner, api, f, parts)),
        Fault::ExpireToken => Some(revoke_token(inner, api, &parts.headers)),
        Fault::Slow(d) => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    }
}

/// Forgets the request's bearer token and answers as the service does for an expired one.
fn revoke_token(inner: &Inner, api: Api, headers: &HeaderMap) -> Response {
    if let Some(t) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        inner.tokens.lock().expect("tokens lock").remove(t.trim());
    }
    match api {
        Api::Graph => graph_error(
            headers,
            401,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        ),
        _ => arm_error(
            headers,
            401,
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        ),
    }
}

/// The service's own answer (for some faults, to another request than the one made).
fn serve(
    inner: &Inner,
    api: Api,
    fault: Option<&Fault>,
    parts: &Parts,
    path: &str,
    query: &HashMap<String, String>,
    bytes: &[u8],
) -> Response {
    let (method, headers) = (&parts.method, &parts.headers);
    let empty_page = matches!(fault, Some(Fault::EmptyPage));
    match api {
        Api::Token => token(inner, path, query, headers, bytes),
        Api::Graph => graph(inner, method, path, query, headers, bytes, empty_page),
        Api::ResourceGraph => resource_graph(inner, method, query, headers, bytes, empty_page),
        Api::Arm => match fault {
            // ARM's own answer, but for the collection the resource belongs to.
            Some(Fault::CollectionBody) => {
                let collection = hostile::collection_path(path).unwrap_or_else(|| path.to_owned());
                arm_metered(inner, method, &collection, query, headers)
            }
            Some(Fault::OtherResourceBody) => hostile::other_resource(inner, path, query, headers),
            _ => arm_metered(inner, method, path, query, headers),
        },
    }
}

/// The cost of a page grows with its items (the handlers say how many in `x-sim-items`).
async fn charge_per_item(inner: &Inner, api: Api, mut res: Response) -> Response {
    if let Some(items) = res
        .headers_mut()
        .remove("x-sim-items")
        .and_then(|v| v.to_str().ok().and_then(|v| v.parse::<u32>().ok()))
    {
        let per_item = inner
            .config
            .read()
            .expect("config lock")
            .latencies
            .per_item(api);
        if !per_item.is_zero() {
            tokio::time::sleep(per_item * items).await;
        }
    }
    res
}

/// Applies the faults that change the service's answer on its way out.
async fn change_answer(
    inner: &Inner,
    api: Api,
    fault: Option<Fault>,
    parts: &Parts,
    res: Response,
) -> Response {
    match fault {
        Some(
            f @ (Fault::QuotaHeader { .. } | Fault::TokenExpiresIn(_) | Fault::ForeignNextLink(_)),
        ) => hostile::rewrite(inner, api, &f, parts, res).await,
        Some(Fault::Truncated) => {
            let (mut head, body) = res.into_parts();
            let full = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            head.status = StatusCode::OK;
            head.headers.remove("content-length");
            Response::from_parts(head, Body::from(full.slice(..full.len() / 2)))
        }
        Some(Fault::Reset) => {
            let (mut head, body) = res.into_parts();
            let full = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            head.headers.remove("content-length");
            let half = full.slice(..full.len() / 2);
            let stream = futures::stream::iter(vec![
                Ok::<_, std::io::Error>(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                )),
            ]);
            Response::from_parts(head, Body::from_stream(stream))
        }
        _ => res,
    }
}
