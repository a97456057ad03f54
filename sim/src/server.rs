//! The request pipeline: classify a request, pick its fault, dispatch it to the service that answers it,
//! and apply the faults that change the answer on its way out.

use crate::arm::arm_metered;
use crate::faults::{ArmRoute, Fault, ReqInfo, fault_response, take_fault};
use crate::graph::graph;
use crate::resource_graph::resource_graph;
use crate::respond::{arm_error, graph_error};
use crate::token::token;
use crate::{Api, FOREIGN_LINK_MARKER, Inner, REDIRECT_TARGET_PREFIX, hostile, path};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn classify_route(method: &Method, path: &str) -> Option<Api> {
    let lower = path.to_ascii_lowercase();
    if method == Method::POST && lower.ends_with("/oauth2/v2.0/token") {
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

pub(crate) async fn handle(inner: Arc<Inner>, req: Request<Body>) -> Response {
    if req.uri().path().starts_with(REDIRECT_TARGET_PREFIX) {
        return hostile::stray(&inner, "redirect target", req).await;
    }
    let (parts, body) = req.into_parts();
    if parts
        .uri
        .query()
        .is_some_and(|q| q.contains(FOREIGN_LINK_MARKER))
    {
        hostile::record_stray(&inner, "foreign link", &parts, &[]);
    }
    let latency = inner.config.read().expect("config lock").latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let Some(api) = classify_route(&parts.method, &path) else {
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
    let arm_route = match (api, path::parse(&path)) {
        (Api::Arm, Ok(path::Route::Subscriptions)) => ArmRoute::SubscriptionList,
        (Api::Arm, Ok(path::Route::Resource(r))) if !r.is_collection() => ArmRoute::Resource,
        _ => ArmRoute::Other,
    };
    let info = ReqInfo {
        api,
        has_skip_token: query.contains_key("$skiptoken")
            || (api == Api::ResourceGraph && bytes.windows(10).any(|w| w == b"$skipToken")),
        arm_route,
    };
    let fault = take_fault(&inner, &info, &target);
    match &fault {
        Some(
            f @ (Fault::Throttle { .. }
            | Fault::Status(_)
            | Fault::ExpiredPageToken
            | Fault::SkipTokenError
            | Fault::NotJson),
        ) => {
            return fault_response(api, f, &parts.headers);
        }
        Some(
            f @ (Fault::GatewayEmptyObject
            | Fault::Redirect { .. }
            | Fault::ProxyNotFound { .. }
            | Fault::ImitationNotFound
            | Fault::ArmNotFound { .. }
            | Fault::ThrottleHeader { .. }),
        ) => {
            return hostile::answer(&inner, api, f, &parts);
        }
        Some(Fault::ExpireToken) => {
            if let Some(t) = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
            {
                inner.tokens.lock().expect("tokens lock").remove(t.trim());
            }
            return match api {
                Api::Graph => graph_error(
                    &parts.headers,
                    401,
                    "InvalidAuthenticationToken",
                    "Lifetime validation failed, the token is expired.",
                ),
                _ => arm_error(
                    &parts.headers,
                    401,
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time is earlier than current UTC time.",
                ),
            };
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let empty_page = matches!(fault, Some(Fault::EmptyPage));
    let res = match api {
        Api::Token => token(&inner, &path, &bytes),
        Api::Graph => graph(
            &inner,
            &parts.method,
            &path,
            &query,
            &parts.headers,
            empty_page,
        ),
        Api::ResourceGraph => resource_graph(
            &inner,
            &parts.method,
            &query,
            &parts.headers,
            &bytes,
            empty_page,
        ),
        Api::Arm => match &fault {
            // ARM's own answer, but for the collection the resource belongs to.
            Some(Fault::CollectionBody) => {
                let collection = hostile::collection_path(&path).unwrap_or_else(|| path.clone());
                arm_metered(&inner, &parts.method, &collection, &query, &parts.headers)
            }
            Some(Fault::OtherResourceBody) => {
                hostile::other_resource(&inner, &path, &query, &parts.headers)
            }
            _ => arm_metered(&inner, &parts.method, &path, &query, &parts.headers),
        },
    };
    // The cost of a page grows with its items (the handlers say how many in `x-sim-items`).
    let mut res = res;
    if let Some(items) = res
        .headers_mut()
        .remove("x-sim-items")
        .and_then(|v| v.to_str().ok().and_then(|v| v.parse::<u32>().ok()))
    {
        let per_item = inner.config.read().expect("config lock").per_item;
        if !per_item.is_zero() {
            tokio::time::sleep(per_item * items).await;
        }
    }
    match fault {
        Some(
            f @ (Fault::QuotaHeader { .. } | Fault::TokenExpiresIn(_) | Fault::ForeignNextLink(_)),
        ) => hostile::rewrite(&inner, api, &f, &parts, res).await,
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
