//! What notifications are about: the events a sink can subscribe to and the kinds of sink. Plain data,
//! shared by the configuration, the store's outbox and the delivery worker.

use serde::{Deserialize, Serialize};

/// A lifecycle transition worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A finding entered `confirmed`: a new orphan (the alert-worthy event).
    Confirmed,
    /// A confirmed (or acknowledged) finding was resolved: the principal is gone or the resource is back.
    Resolved,
}

impl EventType {
    pub const ALL: [EventType; 2] = [EventType::Confirmed, EventType::Resolved];

    /// The name in `events = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Resolved => "resolved",
        }
    }

    /// The `type` of the JSON event.
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Confirmed => "orphan.confirmed",
            Self::Resolved => "orphan.resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    pub fn of_event_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.event_name() == s)
    }
}

/// How a sink is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// One signed POST per event, the event document as the body.
    Json,
    /// A Slack incoming webhook: one digest message per scan.
    Slack,
    /// A Microsoft Teams Workflows webhook: one digest Adaptive Card per scan.
    Teams,
}

impl SinkKind {
    pub const ALL: [SinkKind; 3] = [SinkKind::Json, SinkKind::Slack, SinkKind::Teams];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Slack => "slack",
            Self::Teams => "teams",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Slack and Teams get one digest per scan; json one delivery per event.
    pub fn is_digest(self) -> bool {
        !matches!(self, Self::Json)
    }
}

/// A sink as the outbox sees it: its name (the key of its deliveries and its metrics label), its kind and
/// the events it wants. No URL, no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub sink: String,
    pub kind: SinkKind,
    pub events: Vec<EventType>,
}
