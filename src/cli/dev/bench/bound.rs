//! The lower bound of a scan's wall time: what the services' page sizes, latencies and quotas allow
//! however the scan is made, computed from what the simulator counted (its distinct requests, so
//! retries and repeats do not lengthen the bound) and the latencies it was given.
//!
//! For N identities in G Graph pages, s subscription-list pages, Q Resource Graph pages of R rows in all,
//! C resources checked with ARM GETs k at a time and n other ARM reads (providers), with latencies L_x
//! per request of API x and u_x per item of its pages:
//!
//! ```text
//! T_token = L_token                                   the first token, before anything else
//! T_graph = G · L_graph + N · u_graph                 Graph pages are sequential (next links)
//! T_sub   = s · L_arm                                 the subscriptions Resource Graph is asked about
//! T_arg   = (W − 1) · max(5 s, 15 p) + q · p          W = ceil(Q / 15) quota windows of 15 queries per
//!                                                     5 s (ARG-THR); p = L_arg + 1000 u_arg a page;
//!                                                     q = Q − 15 (W − 1) pages in the last window
//! T_arm   = ceil(C / k) · L_arm + n · L_arm           checks k at once; providers one after another
//! ```
//!
//! Two bounds, for two designs:
//!
//! - **sequential** (the design before issue 12, item 1: Resource Graph waits for the last Graph page,
//!   whose types and subscriptions it asks about):
//!   `LB = T_token + T_graph + T_sub + T_arg + T_arm`;
//! - **overlapped** (issue 12, item 1: Resource Graph runs beside the inventory; candidates are
//!   confirmed once both are in): `LB = T_token + max(T_graph, T_sub + T_arg) + T_arm`.
//!
//! Neither includes recording the scan or printing the report: the bound is what the services allow, and
//! the record time is reported beside it. Minimum requests: the distinct requests the simulator counted
//! (one per Graph page, Resource Graph page, subscription-list page, provider, checked resource and
//! token audience).

use miaudit_sim::{Api, Latencies, Stats};

/// Which design the bound is computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Design {
    /// `T_token + max(T_graph, T_sub + T_arg) + T_arm` (Graph and Resource Graph overlapped).
    Overlapped,
    /// `T_token + T_graph + T_sub + T_arg + T_arm` (one stage after the other).
    Sequential,
}

impl Design {
    pub fn name(self) -> &'static str {
        match self {
            Self::Overlapped => "overlapped",
            Self::Sequential => "sequential",
        }
    }

    pub fn formula(self) -> &'static str {
        match self {
            Self::Overlapped => "T_token + max(T_graph, T_sub + T_arg) + T_arm",
            Self::Sequential => "T_token + T_graph + T_sub + T_arg + T_arm",
        }
    }
}

/// Resource Graph's quota: queries per window, and the window (ARG-THR; the simulator's defaults).
const ARG_QUOTA: u64 = 15;
const ARG_WINDOW_S: f64 = 5.0;
/// The most rows a Resource Graph page holds.
const ARG_PAGE_ROWS: f64 = 1000.0;

/// The pieces of the bound, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bound {
    pub token: f64,
    pub graph: f64,
    pub sub: f64,
    pub arg: f64,
    pub arm: f64,
}

impl Bound {
    /// The bound's pieces for a scan the simulator counted as `stats`, with ARM checks `k` at once.
    pub fn of(stats: &Stats, lat: &Latencies, k: u64) -> Self {
        let s = |d: std::time::Duration| d.as_secs_f64();
        let graph_pages = stats.api(Api::Graph).distinct;
        let q = stats.api(Api::ResourceGraph).distinct;
        let arg = if q == 0 {
            0.0
        } else {
            let page = s(lat.resource_graph) + ARG_PAGE_ROWS * s(lat.resource_graph_per_row);
            let windows = q.div_ceil(ARG_QUOTA);
            let last = q - ARG_QUOTA * (windows - 1);
            (windows - 1) as f64 * ARG_WINDOW_S.max(ARG_QUOTA as f64 * page) + last as f64 * page
        };
        let l_arm = s(lat.arm);
        Self {
            token: s(lat.token),
            graph: graph_pages as f64 * s(lat.graph)
                + stats.identities as f64 * s(lat.graph_per_item),
            sub: stats.arm("subscription_list") as f64 * l_arm,
            arg,
            arm: stats.arm("resource").div_ceil(k.max(1)) as f64 * l_arm
                + stats.arm("other") as f64 * l_arm,
        }
    }

    /// The bound for `design`, in seconds.
    pub fn total(&self, design: Design) -> f64 {
        match design {
            Design::Overlapped => self.token + self.graph.max(self.sub + self.arg) + self.arm,
            Design::Sequential => self.token + self.graph + self.sub + self.arg + self.arm,
        }
    }
}

/// The fewest requests the scan could have made: the distinct ones.
pub fn minimum_requests(stats: &Stats) -> u64 {
    stats.apis.values().map(|a| a.distinct).sum()
}

/// The requests the scan made.
pub fn total_requests(stats: &Stats) -> u64 {
    stats.apis.values().map(|a| a.requests).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use miaudit_sim::stats::ApiStats;
    use std::time::Duration;

    fn stats(graph: u64, arg: u64, resources: u64, other: u64) -> Stats {
        let api = |distinct| ApiStats {
            requests: distinct,
            throttled: 0,
            distinct,
        };
        Stats {
            identities: 100_000,
            apis: [
                ("token".to_owned(), api(2)),
                ("graph".to_owned(), api(graph)),
                ("resource_graph".to_owned(), api(arg)),
                ("arm".to_owned(), api(resources + other + 3)),
            ]
            .into(),
            arm_distinct: [
                ("resource".to_owned(), resources),
                ("other".to_owned(), other),
                ("subscription_list".to_owned(), 3),
            ]
            .into(),
        }
    }

    /// 100k identities with the documented latencies: 101 Graph pages of 150 ms, 107 Resource Graph pages
    /// in 8 windows (7 of 5 s, then 2 pages), 502 checks 8 at a time and 10 providers at 50 ms.
    #[test]
    fn the_bound_adds_or_overlaps_the_stages() {
        let lat = Latencies::documented();
        let b = Bound::of(&stats(101, 107, 502, 10), &lat, 8);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(b.token, 0.15));
        assert!(close(b.graph, 101.0 * 0.05 + 100_000.0 * 0.0001), "{b:?}");
        assert!(close(b.sub, 0.15));
        assert!(close(b.arg, 7.0 * 5.0 + 2.0 * 0.15), "{b:?}");
        assert!(close(b.arm, 63.0 * 0.05 + 10.0 * 0.05), "{b:?}");
        assert!(close(
            b.total(Design::Sequential),
            b.token + b.graph + b.sub + b.arg + b.arm
        ));
        assert!(close(
            b.total(Design::Overlapped),
            b.token + b.sub + b.arg + b.arm
        ));
        assert_eq!(
            minimum_requests(&stats(101, 107, 502, 10)),
            2 + 101 + 107 + 515
        );
    }

    /// Pages slower than a third of a second make the latency, not the quota, bind.
    #[test]
    fn slow_pages_outlast_the_quota_window() {
        let lat = Latencies {
            resource_graph: Duration::from_millis(500),
            ..Latencies::ZERO
        };
        let b = Bound::of(&stats(1, 30, 0, 0), &lat, 8);
        assert!((b.arg - (15.0 * 0.5 + 15.0 * 0.5)).abs() < 1e-6, "{b:?}");
    }
}
