//! Pure lifecycle rules of findings: how one scan's observation of an identity moves its finding.
//! No I/O, no clock (`now` is an argument), no async.
//!
//! ```text
//!                 orphaned (authoritative)            spans >= confirm_after
//!   (none) ─────────────────────────────> suspected ──────────────────────────> confirmed
//!     │  unknown                              │  acknowledge                       │ acknowledge
//!     v                                       v                                    v
//!  unverified                            acknowledged <────────────────────────────┘
//!                                             │
//!   suspected | confirmed | acknowledged ─────┴──> resolved
//!       resolution identity_removed: gone from a complete inventory
//!       resolution resource_restored: judged healthy
//!   resolved ── orphaned again ──> suspected (new episode: ticket, note, resolution cleared)
//! ```
//!
//! Evidence decides, per source (README, "Finding lifecycle"): `identity_removed` needs that tenant's inventory to
//! be complete in that scan; `resource_restored` and confirmation need an authoritative verdict of that
//! identity in that scan. An unknown verdict (a failed check included) never resolves or confirms; an
//! identity never seen orphaned that is judged unknown is `unverified`.

use crate::domain::{Reason, Verdict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// States of a finding. `None` (no state) is a healthy identity that has never been a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Suspected,
    Confirmed,
    Acknowledged,
    Resolved,
    Unverified,
    /// An open orphan an active suppression (allowlist entry) covers. Shown, counted and filtered on,
    /// never stored: the finding keeps its lifecycle underneath and shows it again when the suppression
    /// ends.
    Suppressed,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Suspected,
        State::Confirmed,
        State::Acknowledged,
        State::Resolved,
        State::Unverified,
        State::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suspected => "suspected",
            Self::Confirmed => "confirmed",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
            Self::Unverified => "unverified",
            Self::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// An open orphan: what the support-ticket export lists.
    pub fn is_open_orphan(self) -> bool {
        matches!(self, Self::Suspected | Self::Confirmed | Self::Acknowledged)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    IdentityRemoved,
    ResourceRestored,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdentityRemoved => "identity_removed",
            Self::ResourceRestored => "resource_restored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "identity_removed" => Some(Self::IdentityRemoved),
            "resource_restored" => Some(Self::ResourceRestored),
            _ => None,
        }
    }
}

/// The lifecycle part of a stored finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub state: Option<State>,
    /// Counts from 1; a resolved finding judged orphaned again opens the next episode.
    pub episode: u32,
    /// First orphaned verdict of the current episode.
    pub first_detected_at: Option<DateTime<Utc>>,
    /// Latest orphaned verdict.
    pub last_orphaned_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<Resolution>,
    pub ticket: Option<String>,
    pub note: Option<String>,
}

impl Tracked {
    pub fn new() -> Self {
        Self {
            state: None,
            episode: 1,
            first_detected_at: None,
            last_orphaned_at: None,
            confirmed_at: None,
            resolved_at: None,
            resolution: None,
            ticket: None,
            note: None,
        }
    }
}

impl Default for Tracked {
    fn default() -> Self {
        Self::new()
    }
}

/// What one scan saw of an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// In the inventory, with this verdict.
    Judged { verdict: Verdict, reason: Reason },
    /// Not in the inventory; `inventory_complete` says whether the inventory was read to the end.
    Absent { inventory_complete: bool },
}

/// A state change, for the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<State>,
    pub to: State,
    pub resolution: Option<Resolution>,
    pub episode: u32,
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The new lifecycle; `None` when the row should be dropped (a healthy or unverified identity
    /// that left a complete inventory: nothing to remember).
    pub next: Option<Tracked>,
    pub transition: Option<Transition>,
    /// Whether the verdict, reason and evidence of this scan replace the stored ones. Unknown verdicts do
    /// not overwrite the last authoritative verdict of a finding.
    pub take_verdict: bool,
    /// The finding entered `confirmed` (the alert-worthy event).
    pub newly_confirmed: bool,
}

fn orphan_lifecycle(s: Option<State>) -> bool {
    s.is_some_and(|s| s.is_open_orphan() || s == State::Resolved)
}

/// Resolves an open finding.
fn resolve(base: &Tracked, resolution: Resolution, now: DateTime<Utc>, take_verdict: bool) -> Step {
    let mut next = base.clone();
    next.state = Some(State::Resolved);
    next.resolution = Some(resolution);
    next.resolved_at = Some(now);
    Step {
        transition: Some(Transition {
            from: base.state,
            to: State::Resolved,
            resolution: next.resolution,
            episode: next.episode,
        }),
        next: Some(next),
        take_verdict,
        newly_confirmed: false,
    }
}

/// An orphaned verdict: opens an episode (a new one after a resolved one, with ticket, note and
/// resolution cleared), and confirms it once the orphan has been seen for `confirm_after`.
fn orphaned(base: &Tracked, now: DateTime<Utc>, confirm_after: chrono::Duration) -> Step {
    let from = base.state;
    let mut next = base.clone();
    let opening = !from.is_some_and(State::is_open_orphan);
    if opening {
        if from == Some(State::Resolved) {
            next.episode += 1;
            next.ticket = None;
            next.note = None;
            next.resolution = None;
            next.resolved_at = None;
            next.confirmed_at = None;
        }
        next.first_detected_at = Some(now);
        next.state = Some(State::Suspected);
    }
    next.last_orphaned_at = Some(now);
    let started = next.first_detected_at.unwrap_or(now);
    let mut newly_confirmed = false;
    if next.state == Some(State::Suspected) && now - started >= confirm_after {
        next.state = Some(State::Confirmed);
        next.confirmed_at = Some(now);
        newly_confirmed = true;
    }
    let transition = (next.state != from).then(|| Transition {
        from,
        to: next.state.unwrap_or(State::Suspected),
        resolution: None,
        episode: next.episode,
    });
    Step {
        next: Some(next),
        transition,
        take_verdict: true,
        newly_confirmed,
    }
}

/// Moves one identity's finding by one scan's observation.
pub fn advance(
    prev: Option<&Tracked>,
    obs: Observation,
    now: DateTime<Utc>,
    confirm_after: Duration,
) -> Step {
    let base = prev.cloned().unwrap_or_default();
    let from = base.state;
    let unchanged = |take_verdict: bool| Step {
        next: Some(base.clone()),
        transition: None,
        take_verdict,
        newly_confirmed: false,
    };
    let confirm_after = chrono::Duration::from_std(confirm_after).unwrap_or(chrono::Duration::MAX);
    match obs {
        Observation::Absent {
            inventory_complete: false,
        } => unchanged(false),
        Observation::Absent {
            inventory_complete: true,
        } => match from {
            Some(s) if s.is_open_orphan() => {
                resolve(&base, Resolution::IdentityRemoved, now, false)
            }
            Some(State::Resolved) => unchanged(false),
            _ => Step {
                next: None,
                transition: None,
                take_verdict: false,
                newly_confirmed: false,
            },
        },
        Observation::Judged {
            verdict: Verdict::Orphaned,
            ..
        } => orphaned(&base, now, confirm_after),
        Observation::Judged {
            verdict: Verdict::Healthy,
            ..
        } => match from {
            Some(s) if s.is_open_orphan() => {
                resolve(&base, Resolution::ResourceRestored, now, true)
            }
            Some(State::Unverified) => {
                let mut next = base.clone();
                next.state = None;
                Step {
                    next: Some(next),
                    transition: None,
                    take_verdict: true,
                    newly_confirmed: false,
                }
            }
            _ => unchanged(true),
        },
        Observation::Judged {
            verdict: Verdict::Unknown,
            reason,
        } => {
            // A failed check is no evidence at all: it changes nothing of a known identity; an
            // identity seen for the first time is unverified.
            if reason == Reason::CheckFailed && prev.is_some() {
                unchanged(false)
            } else if orphan_lifecycle(from) {
                // Neither confirmed nor resolved by what could not be seen.
                unchanged(false)
            } else {
                let mut next = base.clone();
                next.state = Some(State::Unverified);
                Step {
                    next: Some(next),
                    transition: None,
                    take_verdict: true,
                    newly_confirmed: false,
                }
            }
        }
    }
}

/// Why an acknowledgement is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckRefused {
    /// Only suspected or confirmed findings take a ticket; the state it is in instead.
    NotOpen(Option<State>),
}

/// Records a support ticket on a suspected or confirmed finding (an acknowledged one takes a new
/// ticket number too, without a state change).
pub fn acknowledge(
    prev: &Tracked,
    ticket: String,
    note: Option<String>,
) -> Result<Step, AckRefused> {
    match prev.state {
        Some(State::Suspected | State::Confirmed | State::Acknowledged) => {
            let mut next = prev.clone();
            next.state = Some(State::Acknowledged);
            next.ticket = Some(ticket);
            next.note = note;
            let transition = (prev.state != next.state).then_some(Transition {
                from: prev.state,
                to: State::Acknowledged,
                resolution: None,
                episode: next.episode,
            });
            Ok(Step {
                next: Some(next),
                transition,
                take_verdict: false,
                newly_confirmed: false,
            })
        }
        other => Err(AckRefused::NotOpen(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
            + chrono::Duration::hours(h)
    }

    fn judged(verdict: Verdict, reason: Reason) -> Observation {
        Observation::Judged { verdict, reason }
    }

    fn orphaned() -> Observation {
        judged(Verdict::Orphaned, Reason::ResourceNotFound)
    }

    fn healthy() -> Observation {
        judged(Verdict::Healthy, Reason::ResourcePresent)
    }

    fn failed() -> Observation {
        judged(Verdict::Unknown, Reason::CheckFailed)
    }

    /// The store relies on this (it skips such rows in SQL): an identity that is not a finding (state
    /// none) and is judged healthy again is left exactly as it is, with no transition.
    #[test]
    fn a_healthy_identity_stays_unchanged() {
        let mut back_from_unverified = Tracked::new();
        back_from_unverified.episode = 3;
        back_from_unverified.note = Some("n".into());
        for prev in [Tracked::new(), back_from_unverified] {
            // Resource present is the only healthy reason the judge gives.
            let s = advance(Some(&prev), healthy(), t(1), H);
            assert_eq!(s.next.as_ref(), Some(&prev));
            assert!(s.transition.is_none() && !s.newly_confirmed);
        }
        // A new healthy identity gets the fresh state, with no transition (inserted in bulk).
        let s = advance(None, healthy(), t(1), H);
        assert_eq!(s.next, Some(Tracked::new()));
        assert!(s.transition.is_none());
    }

    /// Runs observations at the given hours, returning the final lifecycle and all transitions.
    fn run(
        steps: &[(i64, Observation)],
        confirm_after: Duration,
    ) -> (Option<Tracked>, Vec<Transition>, u32) {
        let mut cur: Option<Tracked> = None;
        let mut log = Vec::new();
        let mut confirmed = 0;
        for (h, obs) in steps {
            let s = advance(cur.as_ref(), *obs, t(*h), confirm_after);
            log.extend(s.transition);
            confirmed += u32::from(s.newly_confirmed);
            cur = s.next;
        }
        (cur, log, confirmed)
    }

    #[test]
    fn suspected_then_confirmed_once_the_window_is_spanned() {
        let (cur, log, confirmed) = run(
            &[
                (0, orphaned()),
                (1, orphaned()),
                (2, orphaned()),
                (3, orphaned()),
            ],
            2 * H,
        );
        let cur = cur.expect("kept");
        assert_eq!(cur.state, Some(State::Confirmed));
        assert_eq!(cur.first_detected_at, Some(t(0)));
        assert_eq!(cur.confirmed_at, Some(t(2)));
        assert_eq!(cur.last_orphaned_at, Some(t(3)));
        assert_eq!(
            log.iter().map(|x| x.to).collect::<Vec<_>>(),
            [State::Suspected, State::Confirmed]
        );
        assert_eq!(confirmed, 1);
    }

    #[test]
    fn zero_confirm_after_confirms_at_once() {
        let (cur, log, confirmed) = run(&[(0, orphaned())], Duration::ZERO);
        assert_eq!(cur.expect("kept").state, Some(State::Confirmed));
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].from, None);
        assert_eq!(confirmed, 1);
    }

    #[test]
    fn failed_checks_neither_confirm_nor_resolve() {
        let (cur, _, confirmed) = run(&[(0, orphaned()), (5, failed()), (6, failed())], 2 * H);
        let cur = cur.expect("kept");
        assert_eq!(
            cur.state,
            Some(State::Suspected),
            "a failed check confirms nothing"
        );
        assert_eq!(cur.last_orphaned_at, Some(t(0)));
        assert_eq!(confirmed, 0);
        let step = advance(Some(&cur), failed(), t(7), 2 * H);
        assert!(!step.take_verdict, "the last authoritative verdict stays");
        // Other unknowns (403, invisible subscription) do not resolve either.
        let step = advance(
            Some(&cur),
            judged(Verdict::Unknown, Reason::AccessDenied),
            t(7),
            2 * H,
        );
        assert_eq!(step.next.expect("kept").state, Some(State::Suspected));
    }

    #[test]
    fn removal_resolves_only_with_a_complete_inventory() {
        let (cur, _, _) = run(&[(0, orphaned()), (3, orphaned())], 2 * H);
        let cur = cur.expect("kept");
        let partial = advance(
            Some(&cur),
            Observation::Absent {
                inventory_complete: false,
            },
            t(4),
            2 * H,
        );
        assert_eq!(
            partial.next.as_ref().expect("kept").state,
            Some(State::Confirmed)
        );
        assert!(partial.transition.is_none());
        let full = advance(
            Some(&cur),
            Observation::Absent {
                inventory_complete: true,
            },
            t(4),
            2 * H,
        );
        let next = full.next.expect("kept");
        assert_eq!(next.state, Some(State::Resolved));
        assert_eq!(next.resolution, Some(Resolution::IdentityRemoved));
        assert_eq!(full.transition.expect("t").from, Some(State::Confirmed));
    }

    #[test]
    fn restoration_resolves_and_a_new_orphaning_opens_a_new_episode() {
        let (cur, log, _) = run(
            &[
                (0, orphaned()),
                (3, orphaned()),
                (4, healthy()),
                (5, healthy()),
            ],
            2 * H,
        );
        let cur = cur.expect("kept");
        assert_eq!(cur.state, Some(State::Resolved));
        assert_eq!(cur.resolution, Some(Resolution::ResourceRestored));
        assert_eq!(log.len(), 3);
        let mut acked = cur;
        acked.ticket = Some("old".into());
        let step = advance(Some(&acked), orphaned(), t(10), 2 * H);
        let next = step.next.expect("kept");
        assert_eq!(next.state, Some(State::Suspected));
        assert_eq!(next.episode, 2);
        assert_eq!(next.ticket, None);
        assert_eq!(next.resolution, None);
        assert_eq!(next.first_detected_at, Some(t(10)));
        assert_eq!(step.transition.expect("t").from, Some(State::Resolved));
    }

    #[test]
    fn unknown_identities_are_unverified_and_healthy_again_drops_the_state() {
        let (cur, log, _) = run(
            &[(0, judged(Verdict::Unknown, Reason::AccessDenied))],
            2 * H,
        );
        assert_eq!(cur.as_ref().expect("kept").state, Some(State::Unverified));
        assert!(log.is_empty());
        let s = advance(cur.as_ref(), healthy(), t(1), 2 * H);
        assert_eq!(s.next.expect("kept").state, None);
        let gone = advance(
            cur.as_ref(),
            Observation::Absent {
                inventory_complete: true,
            },
            t(1),
            2 * H,
        );
        assert!(gone.next.is_none(), "nothing to remember");
    }

    #[test]
    fn a_failed_check_keeps_the_last_authoritative_verdict_of_any_known_identity() {
        let unverified = advance(
            None,
            judged(Verdict::Unknown, Reason::SubscriptionNotAccessible),
            t(0),
            2 * H,
        )
        .next
        .expect("kept");
        for prev in [Tracked::new(), unverified] {
            let s = advance(Some(&prev), failed(), t(1), 2 * H);
            assert_eq!(s.next.as_ref(), Some(&prev));
            assert!(!s.take_verdict);
        }
        let fresh = advance(None, failed(), t(0), 2 * H);
        assert_eq!(fresh.next.expect("kept").state, Some(State::Unverified));
        assert!(fresh.take_verdict);
    }

    #[test]
    fn healthy_identities_have_no_state() {
        let s = advance(None, healthy(), t(0), 2 * H);
        assert_eq!(s.next.expect("kept").state, None);
        assert!(s.take_verdict && s.transition.is_none());
    }

    #[test]
    fn acknowledge_takes_open_findings_only() {
        let (cur, _, _) = run(&[(0, orphaned())], 2 * H);
        let cur = cur.expect("kept");
        let s = acknowledge(&cur, "TKT-1".into(), Some("filed".into())).expect("open");
        let acked = s.next.expect("kept");
        assert_eq!(acked.state, Some(State::Acknowledged));
        assert_eq!(acked.ticket.as_deref(), Some("TKT-1"));
        // An acknowledged orphan is never confirmed later, and resolves like the others.
        let later = advance(Some(&acked), orphaned(), t(5), 2 * H);
        assert_eq!(
            later.next.as_ref().expect("kept").state,
            Some(State::Acknowledged)
        );
        assert!(!later.newly_confirmed);
        let restored = advance(Some(&acked), healthy(), t(6), 2 * H)
            .next
            .expect("kept");
        assert_eq!(restored.state, Some(State::Resolved));
        assert_eq!(
            acknowledge(&restored, "x".into(), None),
            Err(AckRefused::NotOpen(Some(State::Resolved)))
        );
        assert!(acknowledge(&Tracked::new(), "x".into(), None).is_err());
    }
}
