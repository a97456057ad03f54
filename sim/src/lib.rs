//! A faithful fake of the Azure endpoints miaudit uses, served on a loopback port: the Entra token
//! endpoint, Microsoft Graph `servicePrincipals`, ARM (`/subscriptions`, providers, resource GETs) and
//! Azure Resource Graph. Used by the tests, `miaudit demo` and benchmarks.
//!
//! Built from Microsoft's documentation (sources beside each handler and in docs/azure-behaviour.md), not from
//! what miaudit sends: it validates parameters as the services do, pages as they page, answers errors
//! with their status codes and bodies, and sends their request-id and quota headers.
//!
//! A crate of its own (`miaudit-sim`) that does not depend on `miaudit`, so that the product can leave it
//! out (`cargo build --no-default-features`) and so that nothing in it can lean on the code it checks: it
//! has its own [`Api`] and parses ARM paths itself ([`path`]).

// Handlers return the service's error response as their `Err`; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod hostile;
pub mod kql;
pub mod model;
pub mod path;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use base64::Engine;
use model::{SubAccess, World};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The four services the simulator plays: what a fault rule targets and what requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// The Entra token endpoint (`/{tenant}/oauth2/v2.0/token`).
    Token,
    /// Microsoft Graph (`/v1.0/...`, `/beta/...`).
    Graph,
    /// Azure Resource Graph (`POST /providers/Microsoft.ResourceGraph/resources`).
    ResourceGraph,
    /// Azure Resource Manager (everything else under `/subscriptions`, `/providers`, ...).
    Arm,
}

impl Api {
    pub const ALL: [Api; 4] = [Api::Token, Api::Graph, Api::ResourceGraph, Api::Arm];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Graph => "graph",
            Self::ResourceGraph => "resource_graph",
            Self::Arm => "arm",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Knobs of the simulated services.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The most service principals Graph returns per page, whatever `$top` asks (Graph may return
    /// fewer than asked: G-PAGE). 999 is the documented maximum.
    pub graph_max_page: usize,
    /// Subscriptions per `GET /subscriptions` page.
    pub subscriptions_page: usize,
    /// The most rows Resource Graph returns per page (documented maximum 1000).
    pub arg_max_page: usize,
    /// Resource Graph queries per window per user (documented example: 15 per 5 s, ARG-THR).
    pub arg_quota: u32,
    pub arg_window: Duration,
    /// Lifetime of issued tokens in seconds (Entra: 3599 typical, CC doc).
    pub token_lifetime_secs: u64,
    /// Added to every response.
    pub latency: Duration,
    /// Added per item of a Graph or Resource Graph page (serialisation and transfer of large pages).
    pub per_item: Duration,
    /// ARM read bucket per subscription (and one for tenant-level reads): capacity and refill per
    /// second. ARM-THR (2025): 250 tokens, 25 per second, per subscription, principal and region.
    pub arm_bucket: (f64, f64),
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            graph_max_page: 999,
            subscriptions_page: 100,
            arg_max_page: 1000,
            arg_quota: 15,
            arg_window: Duration::from_secs(5),
            token_lifetime_secs: 3599,
            latency: Duration::ZERO,
            per_item: Duration::ZERO,
            arm_bucket: (250.0, 25.0),
        }
    }
}

/// Where an injected redirect points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectTo {
    /// The collection the requested resource belongs to, on the same host: what a gateway that
    /// "canonicalises" paths, or a stale route, makes of a resource URL.
    Collection,
    /// The same path and query on another host: the simulator's decoy listener on another loopback
    /// address (`127.0.0.2`, or another port of `127.0.0.1` where that cannot be bound). Whatever arrives
    /// there is recorded ([`SimHandle::strays`]) and answered with an ARM-looking 404.
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
    /// sources are in [`hostile::NON_PROVING_404`].
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
enum ArmRoute {
    /// Not an ARM request, or not one of the kinds below.
    Other,
    /// `GET /subscriptions`
    SubscriptionList,
    /// A resource (not a collection, a provider or a scope).
    Resource,
}

/// What fault selection needs to know of a request.
struct ReqInfo {
    api: Api,
    has_skip_token: bool,
    arm_route: ArmRoute,
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

struct TokenInfo {
    tenant: String,
    audience: Audience,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Graph,
    Arm,
}

struct Inner {
    world: RwLock<World>,
    config: RwLock<SimConfig>,
    faults: Mutex<Vec<FaultRule>>,
    plan: Mutex<Option<(FaultPlan, model::Rng)>>,
    /// ARM read buckets: scope ("sub:<id>" or "tenant") -> (tokens, last refill).
    arm_buckets: Mutex<HashMap<String, (f64, Instant)>>,
    /// Graph delta rounds: token -> principal id -> content hash when the token was issued.
    delta_snapshots: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// Resource Graph results by query fingerprint, paged by skip tokens.
    arg_cache: Mutex<HashMap<String, Arc<Vec<Value>>>>,
    /// Faults injected so far, by name.
    injected: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Requests received, by [`Api`] (in the order of [`Api::ALL`]).
    requests: [AtomicU64; 4],
    tokens: Mutex<HashMap<String, TokenInfo>>,
    arg_window: Mutex<(Instant, u32)>,
    base_url: String,
    /// Root of the decoy listener that plays "another host".
    decoy_url: String,
    /// Requests that arrived where no client should go (see [`StrayRequest`]).
    strays: Mutex<Vec<StrayRequest>>,
    seq: AtomicU64,
}

/// A request that arrived where a client that trusts only answers that prove it never goes: at the decoy
/// host (a redirect's or paging link's "other host"), at the same-host redirect target
/// (`/sim-redirect-target/...`), or at a foreign paging link's other path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayRequest {
    /// `"decoy host"`, `"redirect target"` or `"foreign link"`.
    pub place: &'static str,
    pub method: String,
    /// Path and query as received.
    pub target: String,
    /// The request carried an `Authorization` header.
    pub authorization: bool,
    /// The request body carried a `client_secret` form field (a re-POSTed token request).
    pub client_secret: bool,
}

/// Path prefix of the same-host redirect target.
pub const REDIRECT_TARGET_PREFIX: &str = "/sim-redirect-target";
/// Query marker of foreign paging links, so a request that followed one can be recognised.
pub const FOREIGN_LINK_MARKER: &str = "sim-foreign-link";

/// A running simulator.
pub struct SimHandle {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
    decoy: tokio::task::JoinHandle<()>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
        self.decoy.abort();
    }
}

impl SimHandle {
    /// Starts the simulator on `127.0.0.1:0`.
    pub async fn start(world: World, config: SimConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", world, config).await
    }

    pub async fn start_on(addr: &str, world: World, config: SimConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        // "Another host" for redirects and paging links: another loopback address where the system has
        // one (Linux routes all of 127/8 to lo), else another port, which is another origin all the same.
        // Loopback only: nothing a client follows ever leaves the machine.
        let decoy_listener = match tokio::net::TcpListener::bind("127.0.0.2:0").await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind((local.ip(), 0)).await?,
        };
        let decoy_local = decoy_listener.local_addr()?;
        let inner = Arc::new(Inner {
            world: RwLock::new(world),
            config: RwLock::new(config),
            faults: Mutex::new(Vec::new()),
            plan: Mutex::new(None),
            arg_cache: Mutex::new(HashMap::new()),
            delta_snapshots: Mutex::new(HashMap::new()),
            arm_buckets: Mutex::new(HashMap::new()),
            injected: Mutex::new(std::collections::BTreeMap::new()),
            requests: Default::default(),
            tokens: Mutex::new(HashMap::new()),
            arg_window: Mutex::new((Instant::now(), 0)),
            base_url: format!("http://{local}"),
            decoy_url: format!("http://{decoy_local}"),
            strays: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
        });
        let state = inner.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let s = state.clone();
            async move { handle(s, req).await }
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        let state = inner.clone();
        let decoy_app = axum::Router::new().fallback(move |req: Request<Body>| {
            let s = state.clone();
            async move { hostile::stray(&s, "decoy host", req).await }
        });
        let decoy = tokio::spawn(async move {
            if let Err(e) = axum::serve(decoy_listener, decoy_app).await {
                tracing::error!(error = %e, "simulator decoy stopped");
            }
        });
        Ok(Self { inner, task, decoy })
    }

    /// Root of the decoy listener that plays "another host" for redirects and paging links.
    pub fn decoy_base_url(&self) -> &str {
        &self.inner.decoy_url
    }

    /// Requests that arrived at the decoy host, the redirect target or a foreign link's path.
    pub fn strays(&self) -> Vec<StrayRequest> {
        self.inner.strays.lock().expect("strays lock").clone()
    }

    /// Adds several fault rules (e.g. [`hostile::HostileWorld::rules`]).
    pub fn add_faults(&self, rules: impl IntoIterator<Item = FaultRule>) {
        self.inner.faults.lock().expect("faults lock").extend(rules);
    }

    /// `http://127.0.0.1:PORT`: authority host, Graph and ARM root at once.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Changes the world (deletes, recreations, ...) between scans.
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        self.inner.arg_cache.lock().expect("cache lock").clear();
        f(&mut self.inner.world.write().expect("world lock"))
    }

    pub fn with_config(&self, f: impl FnOnce(&mut SimConfig)) {
        f(&mut self.inner.config.write().expect("config lock"));
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.inner.faults.lock().expect("faults lock").push(rule);
    }

    /// Forgets every delta token (as the service does after 7 days).
    pub fn forget_delta_tokens(&self) {
        self.inner
            .delta_snapshots
            .lock()
            .expect("snapshot lock")
            .clear();
    }

    pub fn clear_faults(&self) {
        self.inner.faults.lock().expect("faults lock").clear();
        *self.inner.plan.lock().expect("plan lock") = None;
    }

    /// Injects random faults from now on (replacing any earlier plan).
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        let rng = model::Rng::new(plan.seed);
        *self.inner.plan.lock().expect("plan lock") = Some((plan, rng));
    }

    /// Faults injected so far, by name.
    pub fn injected(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.inner.injected.lock().expect("injected lock").clone()
    }

    /// Requests received per API.
    pub fn requests(&self, api: Api) -> u64 {
        self.inner.requests[api as usize].load(Ordering::Relaxed)
    }

    /// A configuration (TOML) that points miaudit at this simulator.
    pub fn config_toml(&self, database_url: &str) -> String {
        let (tenant, client, secret) = {
            let w = self.inner.world.read().expect("world lock");
            (
                w.tenant_id.clone(),
                w.client_id.clone(),
                w.client_secret.clone(),
            )
        };
        config_text(self.base_url(), &tenant, &client, &secret, database_url)
    }
}

/// A configuration (TOML) that points miaudit at a simulator serving at `base_url` a world with the
/// credentials every generated world has ([`model::SIM_TENANT_ID`], [`model::SIM_CLIENT_ID`],
/// [`model::SIM_CLIENT_SECRET`]): one that `miaudit simulate` serves in another process, say. The same
/// text as [`SimHandle::config_toml`].
pub fn config_toml_at(base_url: &str, database_url: &str) -> String {
    config_text(
        base_url,
        model::SIM_TENANT_ID,
        model::SIM_CLIENT_ID,
        model::SIM_CLIENT_SECRET,
        database_url,
    )
}

fn config_text(b: &str, tenant: &str, client: &str, secret: &str, database_url: &str) -> String {
    format!(
        "[azure]\nauthority_host = \"{b}\"\ngraph_endpoint = \"{b}\"\narm_endpoint = \"{b}\"\n\n\
         [auth]\nclient_id = \"{client}\"\nclient_secret = \"{secret}\"\n\n\
         [[tenants]]\nid = \"{tenant}\"\nname = \"simulated\"\n\n\
         [database]\nurl = \"{database_url}\"\n"
    )
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn respond(status: u16, headers: Vec<(&'static str, String)>, body: &Value) -> Response {
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = res.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    res
}

/// ARM's error envelope and evidence headers (RPC common API details: `x-ms-request-id`,
/// `x-ms-correlation-request-id`, `x-ms-routing-request-id`).
fn arm_headers(req: &HeaderMap) -> Vec<(&'static str, String)> {
    let rid = new_id();
    let corr = req
        .get("x-ms-correlation-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(new_id, str::to_owned);
    let mut h = vec![
        ("x-ms-request-id", rid.clone()),
        ("x-ms-correlation-request-id", corr),
        (
            "x-ms-routing-request-id",
            format!(
                "WESTEUROPE:{}:{rid}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ),
        ),
    ];
    if let Some(c) = req
        .get("x-ms-client-request-id")
        .and_then(|v| v.to_str().ok())
    {
        h.push(("x-ms-client-request-id", c.to_owned()));
    }
    h
}

fn arm_error(req: &HeaderMap, status: u16, code: &str, message: &str) -> Response {
    respond(
        status,
        arm_headers(req),
        &json!({ "error": { "code": code, "message": message } }),
    )
}

/// Graph's error body with `innerError` (G-ERR; Graph error response schema).
fn graph_error(req: &HeaderMap, status: u16, code: &str, message: &str) -> Response {
    let rid = new_id();
    let crid = req
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| rid.clone(), str::to_owned);
    respond(
        status,
        vec![
            ("request-id", rid.clone()),
            ("client-request-id", crid.clone()),
        ],
        &json!({ "error": { "code": code, "message": message, "innerError": {
            "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
            "request-id": rid, "client-request-id": crid } } }),
    )
}

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

fn take_fault(inner: &Inner, req: &ReqInfo, target: &str) -> Option<Fault> {
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

fn fault_response(api: Api, fault: &Fault, req: &HeaderMap) -> Response {
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

async fn handle(inner: Arc<Inner>, req: Request<Body>) -> Response {
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

/// The client-credentials grant (CC doc): form body, one `.default` scope; AADSTS errors with
/// `error`, `error_description`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
fn token(inner: &Inner, path: &str, body: &[u8]) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let tenant = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let aad = |status: u16, error: &str, code: u32, text: &str| {
        respond(
            status,
            vec![],
            &json!({
                "error": error,
                "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}", new_id(), new_id(), chrono::Utc::now().to_rfc3339()),
                "error_codes": [code],
                "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
                "trace_id": new_id(),
                "correlation_id": new_id(),
            }),
        )
    };
    let w = inner.world.read().expect("world lock");
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if tenant != w.tenant_id {
        return aad(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."
            ),
        );
    }
    if form.get("client_id") != Some(&w.client_id) {
        return aad(
            400,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                form.get("client_id").map_or("", String::as_str)
            ),
        );
    }
    if form.get("client_secret") != Some(&w.client_secret) {
        return aad(
            401,
            "invalid_client",
            7_000_215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    let scope = form.get("scope").map(String::as_str).unwrap_or("");
    let audience = if scope.ends_with("graph.microsoft.com/.default")
        || scope.ends_with("graph.microsoft.us/.default")
        || scope.ends_with("microsoftgraph.chinacloudapi.cn/.default")
    {
        Audience::Graph
    } else if scope.ends_with("management.azure.com/.default")
        || scope.ends_with("management.azure.com//.default")
        || scope.ends_with("management.usgovcloudapi.net/.default")
        || scope.ends_with("management.chinacloudapi.cn/.default")
        || scope.ends_with("management.core.windows.net/.default")
    {
        Audience::Arm
    } else {
        return aad(
            400,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        );
    };
    let lifetime = inner
        .config
        .read()
        .expect("config lock")
        .token_lifetime_secs;
    let value = format!(
        "sim.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(new_id())
    );
    inner.tokens.lock().expect("tokens lock").insert(
        value.clone(),
        TokenInfo {
            tenant: w.tenant_id.clone(),
            audience,
            expires: Instant::now() + Duration::from_secs(lifetime),
        },
    );
    respond(
        200,
        vec![],
        &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": value}),
    )
}

/// Checks the bearer token; `Err` is the response the service gives.
fn authorize(inner: &Inner, headers: &HeaderMap, want: Audience) -> Result<String, Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let tokens = inner.tokens.lock().expect("tokens lock");
    let info = token.and_then(|t| tokens.get(t));
    let fail = |code: &str, msg: &str| match want {
        Audience::Graph => graph_error(headers, 401, "InvalidAuthenticationToken", msg),
        Audience::Arm => arm_error(headers, 401, code, msg),
    };
    match (token, info) {
        (None, _) => Err(fail(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )),
        (Some(_), None) => Err(fail(
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )),
        (Some(_), Some(i)) if Instant::now() >= i.expires => Err(fail(
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        )),
        (Some(_), Some(i)) if i.audience != want => Err(fail(
            "InvalidAuthenticationTokenAudience",
            "The access token has been obtained for wrong audience or resource.",
        )),
        (Some(_), Some(i)) => Ok(i.tenant.clone()),
    }
}

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

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn unb64(s: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

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
fn graph(
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

fn readable(w: &World, tenant: &str, sub: &model::SimSubscription) -> bool {
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

fn api_version<'a>(
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
fn arm_metered(
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
        // RES-SPEC `GetSubscription`: the same object the list holds.
        path::Route::Subscription(sub) => {
            if let Some(r) = subscription_gate(
                &w,
                headers,
                &sub,
                "Microsoft.Resources/subscriptions/read",
                path,
            ) {
                return r;
            }
            match w.subscription(&sub) {
                Some(s) => respond(200, arm_headers(headers), &subscription_json(&w, s)),
                None => arm_error(headers, 404, "SubscriptionNotFound", "Not found."),
            }
        }
        // RES-SPEC `ResourceGroups_List` / `ResourceGroups_Get`.
        path::Route::ResourceGroups(sub) => {
            if let Some(r) = subscription_gate(
                &w,
                headers,
                &sub,
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
                .map(|k| resource_group_json(&sub, &k[prefix.len()..]))
                .collect();
            respond(200, arm_headers(headers), &json!({ "value": value }))
        }
        path::Route::ResourceGroup {
            subscription,
            group,
        } => {
            let action = "Microsoft.Resources/subscriptions/resourceGroups/read";
            if let Some(r) = subscription_gate(&w, headers, &subscription, action, path) {
                return r;
            }
            let key = format!("/subscriptions/{subscription}/resourcegroups/{group}")
                .to_ascii_lowercase();
            if w.denied_resource_groups.contains(&key) {
                return authorization_failed(&w, headers, action, path);
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
                &resource_group_json(&subscription, &group),
            )
        }
        path::Route::ManagementGroup(mg) => {
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
        // Providers: /subscriptions/{s}/providers/{ns} and /providers/{ns} (RES-SPEC GetProvider.json,
        // GetNamedProviderAtTenant.json).
        path::Route::Provider {
            subscription,
            namespace,
        } => {
            let prefix = match &subscription {
                Some(sub) => {
                    if let Some(r) = subscription_gate(
                        &w,
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
                .find(|(k, _)| k.eq_ignore_ascii_case(&namespace))
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
        path::Route::Resource(p) => resource_get(&w, &tenant, path, &p, &version, headers),
    }
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

/// Whether `key` (a lower-case resource id) lies in a resource group the caller may not read.
fn in_denied_group(w: &World, key: &str) -> bool {
    w.denied_resource_groups
        .iter()
        .any(|rg| key.starts_with(rg.as_str()) && key[rg.len()..].starts_with('/'))
}

/// `GET {resourceId}?api-version=` with ARM's order of checks: subscription, type and version,
/// authorization, resource group, parent, resource (ARM-ERR error-not-found.md; RPC). A path that ends
/// at a type is that type's list in that scope: `{"value": [...]}` (every ARM list operation, e.g.
/// `Namespaces_ListByResourceGroup` in the Service Bus spec), after the same checks.
fn resource_get(
    w: &World,
    tenant: &str,
    raw: &str,
    p: &path::ResourcePath,
    version: &str,
    headers: &HeaderMap,
) -> Response {
    let action = format!("{}/{}/read", p.namespace(), p.type_path());
    if let Some(sub) = p.subscription()
        && let Some(r) = subscription_gate(w, headers, sub, &action, raw)
    {
        return r;
    }
    if let Some(mg) = p.management_group()
        && !w.management_groups.contains(&mg.to_ascii_lowercase())
    {
        return arm_error(
            headers,
            404,
            "ManagementGroupNotFound",
            &format!("Management group '{mg}' not found."),
        );
    }
    let Some((_, types)) = w
        .providers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(p.namespace()))
    else {
        return arm_error(
            headers,
            404,
            "InvalidResourceNamespace",
            &format!("The resource namespace '{}' is invalid.", p.namespace()),
        );
    };
    let Some((tname, versions)) = types
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(&p.type_path()))
    else {
        return arm_error(
            headers,
            404,
            "InvalidResourceType",
            &format!(
                "The resource type '{}' could not be found in the namespace '{}' for api version '{version}'.",
                p.type_path(),
                p.namespace()
            ),
        );
    };
    let accepted: Vec<&str> = versions
        .iter()
        .map(String::as_str)
        .filter(|v| !w.refused_versions.contains(*v))
        .collect();
    if !accepted.contains(&version) {
        return arm_error(
            headers,
            400,
            "NoRegisteredProviderFound",
            &format!(
                "No registered resource provider found for location 'westeurope' and API version '{version}' for type '{tname}'. The supported api-versions are '{}'. The supported locations are 'westeurope, eastus, swedencentral'.",
                accepted.join(", ")
            ),
        );
    }
    if let (Some(sub), Some(rg)) = (p.subscription(), p.resource_group()) {
        let rg_key = format!("/subscriptions/{sub}/resourcegroups/{rg}").to_ascii_lowercase();
        if w.denied_resource_groups.contains(&rg_key) {
            return authorization_failed(w, headers, &action, raw);
        }
        if !w.resource_groups.contains(&rg_key) {
            return arm_error(
                headers,
                404,
                "ResourceGroupNotFound",
                &format!("Resource group '{rg}' could not be found."),
            );
        }
    }
    // A nested child (or list of children) whose parent is gone.
    let parent_gone = |parent: &path::ResourcePath| {
        arm_error(
            headers,
            404,
            "ParentResourceNotFound",
            &format!(
                "Can not perform requested operation on nested resource. Parent resource '{}' not found.",
                parent.name().unwrap_or("")
            ),
        )
    };
    if p.is_collection() {
        if let Some(parent) = p.parent()
            && !w.resources.contains_key(&parent.key())
        {
            return parent_gone(&parent);
        }
        let value: Vec<Value> = w
            .resources
            .iter()
            .filter(|(k, _)| !in_denied_group(w, k))
            .filter(|(_, r)| match path::parse(&r.id) {
                Ok(path::Route::Resource(m)) => p.lists(&m),
                _ => false,
            })
            .map(|(_, r)| r.body_at(tenant, Some(version)))
            .collect();
        return respond(200, arm_headers(headers), &json!({ "value": value }));
    }
    // A decoded separator inside a segment names no resource (see `path`).
    if !p.has_escaped_separator() {
        if let Some(r) = w.resources.get(&p.key()) {
            return respond(200, arm_headers(headers), &r.body_at(tenant, Some(version)));
        }
        if let Some(parent) = p.parent()
            && !w.resources.contains_key(&parent.key())
        {
            return parent_gone(&parent);
        }
    }
    let name = p.name().unwrap_or("");
    // Resource providers use their own not-found codes (ARM-ERR; captures in the docs/azure-behaviour.md §4).
    let (code, message) = if p
        .namespace()
        .eq_ignore_ascii_case("Microsoft.Authorization")
    {
        (
            "PolicyAssignmentNotFound",
            format!("The policy assignment '{name}' is not found."),
        )
    } else if p.namespace().eq_ignore_ascii_case("Microsoft.Sql") {
        ("NotFound", format!("Cannot find Server with name {name}."))
    } else {
        (
            "ResourceNotFound",
            format!(
                "The Resource '{}/{}/{name}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                p.namespace(),
                p.type_path(),
                p.resource_group().unwrap_or("")
            ),
        )
    };
    arm_error(headers, 404, code, &message)
}

fn hms(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Resource Graph `POST /providers/Microsoft.ResourceGraph/resources` (ARG-SPEC 2024-04-01): the query
/// is evaluated over the tables by [`kql`], scoped to readable subscriptions, paged by `$skipToken`,
/// throttled per user with `x-ms-user-quota-remaining` / `x-ms-user-quota-resets-after` (ARG-THR).
fn resource_graph(
    inner: &Inner,
    method: &Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    empty_page: bool,
) -> Response {
    let tenant = match authorize(inner, headers, Audience::Arm) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = api_version(q, headers) {
        return r;
    }
    if method != Method::POST {
        return arm_error(headers, 405, "MethodNotAllowed", "Use POST.");
    }
    // A content type other than JSON is answered with HTTP 500 (ARG troubleshoot).
    let json_ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json_ct {
        return arm_error(
            headers,
            500,
            "InternalServerError",
            "Encountered internal server error.",
        );
    }
    let cfg = inner.config.read().expect("config lock").clone();
    // Quota window per user.
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
            return respond(
                429,
                h,
                &json!({"error": {"code": "RateLimiting", "message": format!("Please provide below info when asking for support: timestamp = {}, correlationId = {}. Details: Client application has been throttled and should not attempt to repeat the request until an amount of time has elapsed. Please see https://aka.ms/resourcegraph-throttling for help.", chrono::Utc::now().to_rfc3339(), new_id())}}),
            );
        }
        win.1 += 1;
        (cfg.arg_quota - win.1, resets)
    };
    let mut h = arm_headers(headers);
    h.push(("x-ms-user-quota-remaining", remaining.to_string()));
    h.push(("x-ms-user-quota-resets-after", hms(resets)));
    let bad = |h: Vec<(&'static str, String)>, detail_code: &str, detail: &str| {
        respond(
            400,
            h,
            &json!({"error": {"code": "BadRequest", "message": format!("Please provide below info when asking for support: timestamp = {}, correlationId = {}.", chrono::Utc::now().to_rfc3339(), new_id()),
            "details": [{"code": "InvalidQuery", "message": "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error before retrying."}, {"code": detail_code, "message": detail}]}}),
        )
    };
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return bad(
            h,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    let Some(query_text) = req.get("query").and_then(Value::as_str) else {
        return bad(h, "MissingQuery", "The query is required.");
    };
    let query = match kql::parse(query_text) {
        Ok(q) => q,
        Err(e) => return bad(h, "ParserFailure", &e),
    };
    let table = query.table.to_ascii_lowercase();
    if table != "resources" && table != "policyresources" {
        return bad(
            h,
            "UnknownTable",
            &format!("Table '{}' is not supported by the simulator.", query.table),
        );
    }
    let w = inner.world.read().expect("world lock");
    let listed: Option<Vec<String>> = req.get("subscriptions").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
            .collect()
    });
    let scope: Vec<String> = match &listed {
        Some(l) => l
            .iter()
            .filter(|s| w.subscription(s).is_some_and(|x| readable(&w, &tenant, x)))
            .cloned()
            .collect(),
        None => w
            .subscriptions
            .iter()
            .filter(|s| readable(&w, &tenant, s))
            .map(|s| s.id.to_ascii_lowercase())
            .collect(),
    };
    if listed.as_ref().is_some_and(|l| !l.is_empty()) && scope.is_empty() {
        return arm_error(
            headers,
            403,
            "AuthorizationFailed",
            "The client does not have authorization to read any of the requested subscriptions.",
        );
    }
    let opts = req.get("options").cloned().unwrap_or(Value::Null);
    let top = match opts.get("$top") {
        None | Some(Value::Null) => 100,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=1000).contains(&n) => usize::try_from(n).unwrap_or(1000),
            _ => return bad(h, "InvalidTop", "$top must be between 1 and 1000."),
        },
    };
    let skip = opts
        .get("$skip")
        .and_then(Value::as_u64)
        .map_or(0, |n| usize::try_from(n).unwrap_or(0));
    let fingerprint = format!("{:x}", fxhash(&format!("{query_text}|{scope:?}")));
    let offset = match opts.get("$skipToken").and_then(Value::as_str) {
        None => skip,
        Some(t) => match unb64(t) {
            Some(v) if v["h"].as_str() == Some(fingerprint.as_str()) => {
                usize::try_from(v["o"].as_u64().unwrap_or(0)).unwrap_or(0)
            }
            _ => {
                return bad(
                    h,
                    "InvalidSkipToken",
                    "The skip token is not valid for this query.",
                );
            }
        },
    };
    // A query's result is evaluated once and paged from that snapshot, as a skip token continues the
    // same result set (ARG paging-results); later pages do not re-run the query.
    let cached = opts.get("$skipToken").and_then(|_| {
        inner
            .arg_cache
            .lock()
            .expect("cache lock")
            .get(&fingerprint)
            .cloned()
    });
    let data = match cached {
        Some(d) => d,
        None => {
            let tenant_id = w.tenant_id.clone();
            let scope_set: std::collections::HashSet<&str> =
                scope.iter().map(String::as_str).collect();
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
            let d = match query.run(rows) {
                Ok(d) => Arc::new(d),
                Err(e) => return bad(h, "EvaluationFailure", &e),
            };
            let mut cache = inner.arg_cache.lock().expect("cache lock");
            if cache.len() >= 64 {
                cache.clear();
            }
            cache.insert(fingerprint.clone(), d.clone());
            d
        }
    };
    let page_size = top.min(cfg.arg_max_page).max(1);
    let (take, advance) = if empty_page {
        (0, 0)
    } else {
        (page_size, page_size)
    };
    let page: Vec<Value> = data.iter().skip(offset).take(take).cloned().collect();
    let more = offset + advance < data.len() && query.pageable();
    let page_len = page.len();
    let mut out = json!({
        "totalRecords": data.len(),
        "count": page.len(),
        "resultTruncated": if more || query.pageable() { "false" } else { "true" },
        "facets": [],
    });
    if opts.get("resultFormat").and_then(Value::as_str) == Some("table") {
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
    h.push(("x-sim-items", page_len.to_string()));
    if more {
        let nonce = inner.seq.load(Ordering::Relaxed);
        out["$skipToken"] = json!(b64(
            &json!({"o": offset + advance, "h": fingerprint, "n": nonce})
        ));
    }
    respond(200, h, &out)
}

/// A small stable hash for skip-token fingerprints.
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_for_another_process_is_the_handles() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let sim = SimHandle::start(World::generate(1, 10), SimConfig::default())
                .await
                .expect("starts");
            assert_eq!(
                sim.config_toml("sqlite://x.db"),
                config_toml_at(sim.base_url(), "sqlite://x.db")
            );
        });
    }
}
