//! What the simulator counts of the requests it serves, for benchmarks: per API, the requests, the ones
//! answered 429, and the *distinct* ones — the requests a client that never repeats itself would have
//! made. A retry, a re-read page or a re-checked resource is a request but not a distinct one, so
//! `requests / distinct` says how many requests a scan wasted, measured by the server rather than by
//! the client's own counters.
//!
//! A request is the same as an earlier one when it asks for the same thing: Graph and Resource Graph
//! pages by their listing and offset (their paging tokens carry a nonce, so the link of a re-listed page
//! differs), everything else by method, path, query and body. Answers 429 and 5xx do not count as
//! distinct: the request that replaces them does. Served at `GET /_sim/stats` (`?reset=true` starts over),
//! and by [`SimHandle::stats`](crate::SimHandle::stats).

use crate::Api;
use crate::faults::ArmRoute;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

/// Path of the statistics endpoint (not an Azure path; never counted).
pub const STATS_PATH: &str = "/_sim/stats";

/// One API's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiStats {
    pub requests: u64,
    /// Answered 429.
    pub throttled: u64,
    /// Distinct requests (see the module doc).
    pub distinct: u64,
}

/// Counts since the simulator started or was last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Managed identities in the world (what Graph lists with `servicePrincipalType eq 'ManagedIdentity'`).
    pub identities: u64,
    /// By [`Api::as_str`].
    pub apis: BTreeMap<String, ApiStats>,
    /// Distinct ARM requests by kind: `resource` (GETs of resources: the checks), `subscription_list`
    /// (pages of `GET /subscriptions`) and `other` (providers, everything else).
    pub arm_distinct: BTreeMap<String, u64>,
}

impl Stats {
    /// The counts of `api` (zero when it saw no request).
    pub fn api(&self, api: Api) -> ApiStats {
        self.apis.get(api.as_str()).copied().unwrap_or_default()
    }

    /// Distinct ARM requests of one kind (`resource`, `subscription_list`, `other`).
    pub fn arm(&self, kind: &str) -> u64 {
        self.arm_distinct.get(kind).copied().unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        let apis: serde_json::Map<String, Value> = self
            .apis
            .iter()
            .map(|(k, a)| {
                (
                    k.clone(),
                    json!({"requests": a.requests, "throttled": a.throttled, "distinct": a.distinct}),
                )
            })
            .collect();
        json!({"identities": self.identities, "apis": apis, "arm_distinct": self.arm_distinct})
    }

    /// Reads what [`Stats::to_json`] wrote (from another process).
    pub fn from_json(v: &Value) -> Option<Self> {
        let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let apis = v
            .get("apis")?
            .as_object()?
            .iter()
            .map(|(k, a)| {
                let counts = ApiStats {
                    requests: n(a, "requests"),
                    throttled: n(a, "throttled"),
                    distinct: n(a, "distinct"),
                };
                (k.clone(), counts)
            })
            .collect();
        let arm_distinct = v
            .get("arm_distinct")?
            .as_object()?
            .iter()
            .map(|(k, c)| (k.clone(), c.as_u64().unwrap_or(0)))
            .collect();
        Some(Self {
            identities: v.get("identities")?.as_u64()?,
            apis,
            arm_distinct,
        })
    }
}

/// The running counts (in the simulator's state).
#[derive(Debug, Default)]
pub(crate) struct Counter {
    apis: BTreeMap<&'static str, ApiStats>,
    arm_distinct: BTreeMap<&'static str, u64>,
    /// Hashes of the distinct requests seen, with their API.
    seen: HashSet<(Api, u64)>,
}

impl Counter {
    /// Counts one answered request: `key` is what it asked for (see the module doc).
    pub(crate) fn note(&mut self, api: Api, arm_route: ArmRoute, status: u16, key: u64) {
        let counts = self.apis.entry(api.as_str()).or_default();
        counts.requests += 1;
        if status == 429 {
            counts.throttled += 1;
        }
        if status == 429 || status >= 500 || !self.seen.insert((api, key)) {
            return;
        }
        counts.distinct += 1;
        if api == Api::Arm {
            let kind = match arm_route {
                ArmRoute::Resource => "resource",
                ArmRoute::SubscriptionList => "subscription_list",
                ArmRoute::Other => "other",
            };
            *self.arm_distinct.entry(kind).or_default() += 1;
        }
    }

    pub(crate) fn snapshot(&self, identities: u64) -> Stats {
        Stats {
            identities,
            apis: self
                .apis
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            arm_distinct: self
                .arm_distinct
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_throttled_answers_are_not_distinct() {
        let mut c = Counter::default();
        c.note(Api::Graph, ArmRoute::Other, 200, 1);
        c.note(Api::Graph, ArmRoute::Other, 200, 1);
        c.note(Api::Arm, ArmRoute::Resource, 429, 7);
        c.note(Api::Arm, ArmRoute::Resource, 503, 7);
        c.note(Api::Arm, ArmRoute::Resource, 404, 7);
        let s = c.snapshot(3);
        assert_eq!(
            s.api(Api::Graph),
            ApiStats {
                requests: 2,
                throttled: 0,
                distinct: 1
            }
        );
        assert_eq!(
            s.api(Api::Arm),
            ApiStats {
                requests: 3,
                throttled: 1,
                distinct: 1
            }
        );
        assert_eq!(s.arm("resource"), 1);
        assert_eq!(Stats::from_json(&s.to_json()), Some(s));
    }
}
