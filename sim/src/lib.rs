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

mod arm;
mod credentials;
mod faults;
mod graph;
pub mod hostile;
pub mod kql;
pub mod model;
pub mod path;
mod resource_graph;
mod respond;
mod server;
pub mod stats;
mod token;
pub mod webhook;

pub use faults::{Fault, FaultPlan, FaultRule, LinkTo, RedirectTo};
pub use stats::Stats;

use axum::body::Body;
use axum::http::Request;
use model::World;
use serde_json::Value;
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
    /// Added to every response, whatever the API, on top of [`SimConfig::latencies`] (tests slow the
    /// whole simulator down with it).
    pub latency: Duration,
    /// How long each API takes to answer, and what each item of a page adds
    /// ([`Latencies::documented`] for figures close to Azure's; none by default).
    pub latencies: Latencies,
    /// ARM read bucket per subscription (and one for tenant-level reads): capacity and refill per
    /// second. ARM-THR (2025): 250 tokens, 25 per second, per subscription, principal and region.
    pub arm_bucket: (f64, f64),
    /// What the token endpoints accept besides the client secret ([`Credentials`]).
    pub credentials: Credentials,
}

/// The credentials the simulated Entra accepts besides the app's client secret: a certificate
/// registered on the app, a federated identity credential, and the managed identity endpoints.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The certificate registered on the app (PEM): client assertions must be signed by its key and
    /// name it by thumbprint.
    pub certificate_pem: Option<String>,
    /// Its public key (PEM, `BEGIN PUBLIC KEY`), to verify signatures with.
    pub public_key_pem: Option<String>,
    /// The federated identity credential: the issuer and subject a workload identity's token must carry.
    pub federated: Option<(String, String)>,
    /// `X-IDENTITY-HEADER` the App Service identity endpoint (`/msi/token`) wants (`None`: not served).
    pub identity_header: Option<String>,
    /// The IMDS (`/metadata/identity/oauth2/token`) is served.
    pub imds: bool,
    /// Client ids of user-assigned identities attached to the simulated host (besides its system one).
    pub user_assigned: Vec<String>,
    /// Tenants that exist but where the app is not provisioned: token requests for them answer
    /// AADSTS700016, as Entra does for a multi-tenant app not consented to there.
    pub rejecting_tenants: Vec<String>,
}

impl Default for SimConfig {
    /// Answers as fast as the machine allows (no latency): what the tests want. The developer tools
    /// `simulate` and `bench` use [`Latencies::documented`] instead.
    fn default() -> Self {
        Self {
            graph_max_page: 999,
            subscriptions_page: 100,
            arg_max_page: 1000,
            arg_quota: 15,
            arg_window: Duration::from_secs(5),
            token_lifetime_secs: 3599,
            latency: Duration::ZERO,
            latencies: Latencies::ZERO,
            arm_bucket: (250.0, 25.0),
            credentials: Credentials::default(),
        }
    }
}

/// How long the simulated services take to answer: a time per request of each API, plus a time per item
/// of a Graph or Resource Graph page (a 999-item page takes longer to produce and transfer than a short
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// The Entra token endpoint, per token.
    pub token: Duration,
    /// Microsoft Graph, per request (a `servicePrincipals` page, a delta page).
    pub graph: Duration,
    /// Microsoft Graph, per service principal of a page.
    pub graph_per_item: Duration,
    /// Azure Resource Graph, per query (each page is one).
    pub resource_graph: Duration,
    /// Azure Resource Graph, per row of a page.
    pub resource_graph_per_row: Duration,
    /// ARM, per request (a resource GET, a provider, a page of the subscription list).
    pub arm: Duration,
}

impl Latencies {
    /// Instant answers.
    pub const ZERO: Self = Self {
        token: Duration::ZERO,
        graph: Duration::ZERO,
        graph_per_item: Duration::ZERO,
        resource_graph: Duration::ZERO,
        resource_graph_per_row: Duration::ZERO,
        arm: Duration::ZERO,
    };

    /// Figures close to what Azure answers with (docs/azure-behaviour.md §11 gives the sources and says
    /// which figures are measured and which chosen): a token in 150 ms (a published measurement); a
    /// Graph page of 999 service principals in 150 ms, 50 ms + 100 µs per item (no published figure; what
    /// the independent harness of issue 12 saw, and shorter than published single-request Graph timings);
    /// a Resource Graph page of 1,000 rows in 150 ms likewise (no published figure; its quota binds long
    /// before, §3); an ARM GET in 50 ms (no published figure).
    pub const fn documented() -> Self {
        Self {
            token: Duration::from_millis(150),
            graph: Duration::from_millis(50),
            graph_per_item: Duration::from_micros(100),
            resource_graph: Duration::from_millis(50),
            resource_graph_per_row: Duration::from_micros(100),
            arm: Duration::from_millis(50),
        }
    }

    /// The time one request of `api` takes, before its items.
    pub fn request(&self, api: Api) -> Duration {
        match api {
            Api::Token => self.token,
            Api::Graph => self.graph,
            Api::ResourceGraph => self.resource_graph,
            Api::Arm => self.arm,
        }
    }

    /// What each item of a page of `api` adds (Graph and Resource Graph pages; nothing elsewhere).
    pub fn per_item(&self, api: Api) -> Duration {
        match api {
            Api::Graph => self.graph_per_item,
            Api::ResourceGraph => self.resource_graph_per_row,
            Api::Token | Api::Arm => Duration::ZERO,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) world: RwLock<World>,
    pub(crate) config: RwLock<SimConfig>,
    pub(crate) faults: Mutex<Vec<FaultRule>>,
    pub(crate) plan: Mutex<Option<(FaultPlan, model::Rng)>>,
    /// ARM read buckets: scope ("sub:<id>" or "tenant") -> (tokens, last refill).
    pub(crate) arm_buckets: Mutex<HashMap<String, (f64, Instant)>>,
    /// Graph delta rounds: token -> principal id -> content hash when the token was issued.
    pub(crate) delta_snapshots: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// Resource Graph results by query fingerprint, paged by skip tokens.
    pub(crate) arg_cache: Mutex<HashMap<String, Arc<Vec<Value>>>>,
    /// Faults injected so far, by name.
    pub(crate) injected: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Requests received, by [`Api`] (in the order of [`Api::ALL`]).
    pub(crate) requests: [AtomicU64; 4],
    /// Requests, throttled answers and distinct requests per API, since the last reset ([`stats`]).
    pub(crate) stats: Mutex<stats::Counter>,
    /// Indices into `world.principals` of the principals a Graph listing's type filter (lower-case;
    /// `None`: no filter) matches, so a page is found without filtering the whole directory again.
    /// Emptied whenever the world changes.
    pub(crate) graph_index: Mutex<HashMap<Option<String>, Arc<Vec<usize>>>>,
    pub(crate) tokens: Mutex<HashMap<String, token::TokenInfo>>,
    /// `jti` of every client assertion accepted (Entra refuses a replayed assertion).
    pub(crate) assertions_seen: Mutex<std::collections::HashSet<String>>,
    pub(crate) arg_window: Mutex<(Instant, u32)>,
    pub(crate) base_url: String,
    /// Root of the decoy listener that plays "another host".
    pub(crate) decoy_url: String,
    /// Requests that arrived where no client should go (see [`StrayRequest`]).
    pub(crate) strays: Mutex<Vec<StrayRequest>>,
    pub(crate) seq: AtomicU64,
}

impl Inner {
    /// See [`SimHandle::stats`].
    pub(crate) fn stats(&self, reset: bool) -> Stats {
        let identities = self
            .world
            .read()
            .expect("world lock")
            .principals
            .iter()
            .filter(|p| p.sp_type == "ManagedIdentity")
            .count() as u64;
        let mut counter = self.stats.lock().expect("stats lock");
        let snapshot = counter.snapshot(identities);
        if reset {
            *counter = stats::Counter::default();
        }
        snapshot
    }
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
            stats: Mutex::default(),
            graph_index: Mutex::default(),
            tokens: Mutex::new(HashMap::new()),
            assertions_seen: Mutex::new(std::collections::HashSet::new()),
            arg_window: Mutex::new((Instant::now(), 0)),
            base_url: format!("http://{local}"),
            decoy_url: format!("http://{decoy_local}"),
            strays: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
        });
        let state = inner.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let s = state.clone();
            async move { server::handle(s, req).await }
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
        let mut world = self.inner.world.write().expect("world lock");
        let r = f(&mut world);
        // Under the world's write lock, so no listing rebuilds an index from the world before the change.
        self.inner.graph_index.lock().expect("index lock").clear();
        r
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

    /// Requests, throttled answers and distinct requests per API since the start or the last reset
    /// ([`stats`]); `reset` starts the counts over.
    pub fn stats(&self, reset: bool) -> Stats {
        self.inner.stats(reset)
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
