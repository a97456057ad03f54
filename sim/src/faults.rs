//! Injected faults: what a test asks for ([`FaultRule`], [`FaultPlan`]), which fault a request gets, and
//! the answers of the faults that replace the service's answer with an error.

use crate::respond::{arm_error, graph_error, respond};
use crate::{Api, Inner};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde_json::{Value, json};
use std::time::Duration;

/// Where an injected redirect points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectTo {
    /// The collection the requested resource belongs to, on the same host: what a gateway that
    /// "canonicalises" paths, or a stale route, makes of a resource URL.
    Collection,
    /// The same path and query on another host: the simulator's decoy listener on another loopback
    /// address (`127.0.0.2`, or another port of `127.0.0.1` where that cannot be bound). Whatever arrives
    /// there is recorded ([`SimHandle::strays`](crate::SimHandle::strays)) and answered with an
    /// ARM-looking 404.
    OtherHost,
    /// Another path on the same host (`/sim-redirect-target/...`), recorded and answered like the decoy.
    OtherPath,
}

/// Where an injected paging link points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTo {
    /// The same listing on the decoy host (see [`RedirectTo::OtherHost`]).
    OtherHost,
    /// Another resource on the same host: Graph `/v1.0/users?$skiptoken=...`, ARM
    /// `/subscriptions/{s}/resourceGroups?...`.
    OtherPath,
}

/// An injected failure or hostile answer. The hostile ones (from [`Fault::GatewayEmptyObject`] on) are
/// what gateways, proxies, redirects and impostors in front of Microsoft's services answer; each says
/// which real component produces it. `hostile.rs` builds their answers and lists them
/// ([`Fault::hostile_answers`], [`Fault::extreme_numbers`]).
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with this `Retry-After` value (seconds; Graph sends fractions, G-THR).
    Throttle { retry_after: String },
    /// An error status (500, 502, 503, 504, ...) with the service's error body.
    Status(u16),
    /// The connection breaks in the middle of the body.
    Reset,
    /// The answer comes only after this delay (meant to exceed the client's timeout).
    Slow(Duration),
    /// Status 200 with the first half of the real body.
    Truncated,
    /// Status 200 with an HTML page instead of JSON (a proxy's error page).
    NotJson,
    /// Graph or Resource Graph list: a page with no items whose continuation picks up where it was.
    EmptyPage,
    /// Graph: 400 `Directory_ExpiredPageToken` for a request that carries a `$skiptoken` (G-ERR).
    ExpiredPageToken,
    /// Resource Graph: a request that carries a `$skipToken` fails with 500.
    SkipTokenError,
    /// The bearer token is revoked: 401 `ExpiredAuthenticationToken` (ARM) / `InvalidAuthenticationToken`
    /// (Graph).
    ExpireToken,
    /// 200 `{}` with `application/json` and none of the service's request-id headers: an API gateway
    /// answering for the service, e.g. Azure API Management's `mock-response` policy, which "cancels
    /// normal pipeline execution", defaults to status 200 and returns an example, a schema sample or no
    /// content (azure-docs `articles/api-management/mock-response-policy.md`).
    GatewayEmptyObject,
    /// ARM resource GET: 200 `{"value":[...]}`, ARM's real answer for the collection the resource belongs
    /// to (the resource group's resources of that type), with ARM's headers: what a client gets when its
    /// URL library dropped a `..`/`.` segment of the id, or a proxy rewrote the path.
    CollectionBody,
    /// ARM resource GET: 200 with another resource's body (its `id` is not the requested one), with ARM's
    /// headers: what `.../virtualMachines/a/../b` becomes once normalised, or what a cache that keys on
    /// less than the full path serves.
    OtherResourceBody,
    /// A redirect (301, 302, 307, 308) with `Location` set as `to` says and an empty body. ARM and Graph do
    /// not redirect these requests; load balancers, ingress controllers, HTTP-to-HTTPS and trailing-slash
    /// rules and captive proxies do (RFC 9110 §15.4: 307/308 keep the method and body, so a client that
    /// follows a redirected token request re-sends its secret).
    Redirect { status: u16, to: RedirectTo },
    /// 404 from a proxy or a stray path: an nginx-style HTML page (`html`) or an empty body, no JSON, no
    /// `x-ms-request-id`.
    ProxyNotFound { html: bool },
    /// 404 with ARM's error body `{"error":{"code":"ResourceNotFound",...}}` but none of ARM's request-id
    /// headers: something that is not ARM imitating it (a mock, a test double, a gateway's canned error).
    ImitationNotFound,
    /// ARM 404 with ARM's headers and an error code that is not about the resource (subscription,
    /// namespace, type, location, api-version, principal, management group, tenant); the codes and their
    /// sources are in [`hostile::NON_PROVING_404`](crate::hostile::NON_PROVING_404).
    ArmNotFound { code: String },
    /// 429 carrying `header: value` (and no other wait hint): `Retry-After` (RFC 9110 §10.2.3:
    /// HTTP-date or non-negative delay-seconds), `retry-after-ms` / `x-ms-retry-after-ms` (honoured by
    /// the Azure SDKs, docs/azure-behaviour.md §8), Resource Graph's `x-ms-user-quota-resets-after` (`hh:mm:ss`,
    /// ARG-THR) with extreme or malformed values.
    ThrottleHeader { header: String, value: String },
    /// The real answer with `header: value` set: Resource Graph's `x-ms-user-quota-remaining` /
    /// `x-ms-user-quota-resets-after` (ARG-THR) or ARM's `x-ms-ratelimit-remaining-subscription-reads`
    /// (ARM-THR) with extreme or malformed values.
    QuotaHeader { header: String, value: String },
    /// The real token answer with `expires_in` replaced by this JSON value (Entra sends a number, CC doc;
    /// IMDS a string, docs/azure-behaviour.md §6b).
    TokenExpiresIn(Value),
    /// A Graph `@odata.nextLink` or an ARM subscription list `nextLink` pointing away from the service.
    ForeignNextLink(LinkTo),
}

impl Fault {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Throttle { .. } => "throttle_429",
            Self::Status(500) => "status_500",
            Self::Status(502) => "status_502",
            Self::Status(503) => "status_503",
            Self::Status(504) => "status_504",
            Self::Status(_) => "status_other",
            Self::Reset => "connection_reset",
            Self::Slow(_) => "slow_response",
            Self::Truncated => "truncated_body",
            Self::NotJson => "non_json_body",
            Self::EmptyPage => "empty_page",
            Self::ExpiredPageToken => "expired_page_token",
            Self::SkipTokenError => "skip_token_error",
            Self::ExpireToken => "token_expired",
            Self::GatewayEmptyObject => "gateway_empty_object",
            Self::CollectionBody => "collection_body",
            Self::OtherResourceBody => "other_resource_body",
            Self::Redirect {
                to: RedirectTo::Collection,
                ..
            } => "redirect_collection",
            Self::Redirect {
                to: RedirectTo::OtherHost,
                ..
            } => "redirect_other_host",
            Self::Redirect {
                to: RedirectTo::OtherPath,
                ..
            } => "redirect_other_path",
            Self::ProxyNotFound { html: true } => "proxy_404_html",
            Self::ProxyNotFound { html: false } => "proxy_404_empty",
            Self::ImitationNotFound => "imitation_404",
            Self::ArmNotFound { .. } => "arm_404_not_about_resource",
            Self::ThrottleHeader { .. } => "extreme_throttle_header",
            Self::QuotaHeader { .. } => "extreme_quota_header",
            Self::TokenExpiresIn(_) => "extreme_expires_in",
            Self::ForeignNextLink(LinkTo::OtherHost) => "foreign_link_other_host",
            Self::ForeignNextLink(LinkTo::OtherPath) => "foreign_link_other_path",
        }
    }

    /// Whether the fault can happen to this request.
    fn applies(&self, req: &ReqInfo) -> bool {
        let resource_get = req.api == Api::Arm && req.arm_route == ArmRoute::Resource;
        let for_resource_graph =
            |header: &str| header.to_ascii_lowercase().starts_with("x-ms-user-quota");
        match self {
            Self::EmptyPage => matches!(req.api, Api::Graph | Api::ResourceGraph),
            Self::ExpiredPageToken => req.api == Api::Graph && req.has_skip_token,
            Self::SkipTokenError => req.api == Api::ResourceGraph && req.has_skip_token,
            Self::ExpireToken => req.api != Api::Token,
            Self::Truncated | Self::NotJson | Self::Reset => true,
            Self::Throttle { .. } | Self::Status(_) | Self::Slow(_) => true,
            Self::GatewayEmptyObject | Self::ProxyNotFound { .. } => true,
            Self::CollectionBody | Self::OtherResourceBody => resource_get,
            Self::Redirect { to, .. } => *to != RedirectTo::Collection || resource_get,
            Self::ImitationNotFound | Self::ArmNotFound { .. } => req.api == Api::Arm,
            Self::ThrottleHeader { header, .. } => {
                !for_resource_graph(header) || req.api == Api::ResourceGraph
            }
            Self::QuotaHeader { header, .. } => {
                if for_resource_graph(header) {
                    req.api == Api::ResourceGraph
                } else {
                    req.api == Api::Arm
                }
            }
            Self::TokenExpiresIn(_) => req.api == Api::Token,
            Self::ForeignNextLink(_) => {
                req.api == Api::Graph
                    || (req.api == Api::Arm && req.arm_route == ArmRoute::SubscriptionList)
            }
        }
    }
}

/// What kind of ARM request a path is, for fault selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArmRoute {
    /// Not an ARM request, or not one of the kinds below.
    Other,
    /// `GET /subscriptions`
    SubscriptionList,
    /// A resource (not a collection, a provider or a scope).
    Resource,
}

/// What fault selection needs to know of a request.
pub(crate) struct ReqInfo {
    pub(crate) api: Api,
    pub(crate) has_skip_token: bool,
    pub(crate) arm_route: ArmRoute,
}

/// Random faults from a seed: each request of `apis` gets one of `kinds` (that applies to it) with
/// probability `per_thousand`/1000. Repeatable for a given request order.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub seed: u64,
    pub per_thousand: u64,
    pub apis: Vec<Api>,
    pub kinds: Vec<Fault>,
}

/// Applies `fault` to requests of `api` whose path and query (`/path?query`) contain `path_contains`
/// (case-insensitively), `times` times (None: always).
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub api: Api,
    pub path_contains: Option<String>,
    pub times: Option<u32>,
    pub fault: Fault,
}

pub(crate) fn take_fault(inner: &Inner, req: &ReqInfo, target: &str) -> Option<Fault> {
    let chosen = {
        let mut faults = inner.faults.lock().expect("faults lock");
        let pos = faults.iter().position(|r| {
            r.api == req.api
                && r.path_contains.as_ref().is_none_or(|p| {
                    target
                        .to_ascii_lowercase()
                        .contains(&p.to_ascii_lowercase())
                })
                && r.times != Some(0)
                && r.fault.applies(req)
        });
        pos.map(|pos| {
            let rule = &mut faults[pos];
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            rule.fault.clone()
        })
    };
    let chosen = chosen.or_else(|| {
        let mut plan = inner.plan.lock().expect("plan lock");
        let (p, rng) = plan.as_mut()?;
        if !p.apis.contains(&req.api) || !rng.chance(p.per_thousand) {
            return None;
        }
        let applicable: Vec<&Fault> = p.kinds.iter().filter(|f| f.applies(req)).collect();
        if applicable.is_empty() {
            return None;
        }
        let pick = usize::try_from(rng.below(applicable.len() as u64)).unwrap_or(0);
        Some(applicable[pick].clone())
    })?;
    *inner
        .injected
        .lock()
        .expect("injected lock")
        .entry(chosen.name())
        .or_default() += 1;
    Some(chosen)
}

pub(crate) fn fault_response(api: Api, fault: &Fault, req: &HeaderMap) -> Response {
    let (status, retry_after) = match fault {
        Fault::Throttle { retry_after } => (429, Some(retry_after.clone())),
        Fault::Status(s) => (*s, None),
        Fault::SkipTokenError => (500, None),
        Fault::ExpiredPageToken => {
            return graph_error(
                req,
                400,
                "Directory_ExpiredPageToken",
                "The specified page token value has expired and can no longer be included in your request.",
            );
        }
        Fault::NotJson => {
            let mut res = Response::new(Body::from(
                "<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>",
            ));
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/html"));
            return res;
        }
        // The others change a real answer; see `handle`.
        _ => (500, None),
    };
    let code = match status {
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "Error",
    };
    let mut res = match api {
        Api::Graph => graph_error(
            req,
            status,
            if status == 429 {
                "TooManyRequests"
            } else {
                "serviceNotAvailable"
            },
            "Please retry again later.",
        ),
        Api::Token => respond(
            status,
            vec![],
            &json!({"error": "temporarily_unavailable", "error_description": "AADSTS50196: The server is temporarily unavailable."}),
        ),
        _ => arm_error(
            req,
            status,
            code,
            "The request could not be processed now. Please retry later.",
        ),
    };
    if let Some(ra) = retry_after
        && let Ok(v) = HeaderValue::from_str(&ra)
    {
        res.headers_mut().insert("retry-after", v);
    }
    res
}
