//! miaudit finds orphaned managed identities in Microsoft Entra ID tenants: service principals of type
//! `ManagedIdentity` whose Azure resource is gone, or now carries another identity.
//!
//! # Layout
//! One scan flows through six stages, each a module:
//!
//! - [`graph`] — inventory: the tenant's managed-identity service principals from Microsoft Graph;
//! - [`domain`] — parse: `alternativeNames` into a typed [`domain::ResourceId`] and identity type;
//! - [`arm`] — resolve: subscriptions, Resource Graph in bulk, an ARM GET of each candidate;
//! - [`classify`] — judge: a pure function from identity and evidence to a verdict;
//! - [`lifecycle`] — pure rules that move findings (suspected, confirmed, resolved, ...) scan by scan;
//! - [`store`] — record: SQLite, one transaction per scan;
//! - publish: [`report`] (the CLI report), [`api`] (HTTP JSON API), [`metrics`] (Prometheus),
//!   [`export`] (the support-ticket list), all written as they are read ([`output`]), [`notify`]
//!   (webhooks fed by a durable outbox).
//!
//! Around them: [`scan`] runs one scan through the stages, [`scheduler`] runs scans for the daemon
//! (cron, overlap guard, timeout), [`app`] assembles the daemon, [`azure`] holds what every Azure call shares
//! (retry policy, tokens, errors), [`config`] the typed settings and [`cli`] the commands. A faithful
//! fake of the Azure endpoints, for the tests, `miaudit demo` and the benchmarks, is the workspace's
//! other crate, `miaudit-sim` (sim/).

pub mod api;
pub mod app;
pub mod arm;
pub mod azure;
pub mod classify;
pub mod cli;
pub mod config;
pub mod domain;
pub mod export;
mod fuzz;
pub mod graph;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod report;
pub mod scan;
pub mod scheduler;
pub mod store;
pub mod telemetry;

/// The git commit the binary was built from (build.rs): 12 hex digits, "-dirty" when the checkout had
/// changes, or "unknown".
pub const GIT_COMMIT: &str = env!("MIAUDIT_GIT_COMMIT");
/// `miaudit --version`: the version and the commit.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MIAUDIT_GIT_COMMIT"),
    ")"
);
