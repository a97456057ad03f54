//! Verdicts and what they rest on: the judge's output and the evidence, and the per-identity finding,
//! summary and trigger that scanning, recording and publishing share.

use super::{IdentityType, ObjectId, SubscriptionId, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The three verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Orphaned,
    Unknown,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Healthy, Verdict::Orphaned, Verdict::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Orphaned => "orphaned",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Reason codes of the verdict rules (README, "Verdicts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ResourcePresent,
    ResourceNotFound,
    ResourceGroupNotFound,
    PrincipalMismatch,
    SubscriptionTransferred,
    AccessDenied,
    SubscriptionNotAccessible,
    UnrecognizedAlternativeNames,
    /// ARM shows the resource without this identity, but no second answer confirms it (the newest
    /// api-version could not be read, or Resource Graph has no row for the resource).
    IdentityUnconfirmed,
    /// ARM's answer would make an orphan, but Resource Graph shows the principal on another resource.
    PrincipalInUseElsewhere,
    CheckFailed,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::ResourcePresent,
        Reason::ResourceNotFound,
        Reason::ResourceGroupNotFound,
        Reason::PrincipalMismatch,
        Reason::SubscriptionTransferred,
        Reason::AccessDenied,
        Reason::SubscriptionNotAccessible,
        Reason::UnrecognizedAlternativeNames,
        Reason::IdentityUnconfirmed,
        Reason::PrincipalInUseElsewhere,
        Reason::CheckFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResourcePresent => "resource_present",
            Self::ResourceNotFound => "resource_not_found",
            Self::ResourceGroupNotFound => "resource_group_not_found",
            Self::PrincipalMismatch => "principal_mismatch",
            Self::SubscriptionTransferred => "subscription_transferred",
            Self::AccessDenied => "access_denied",
            Self::SubscriptionNotAccessible => "subscription_not_accessible",
            Self::UnrecognizedAlternativeNames => "unrecognized_alternative_names",
            Self::IdentityUnconfirmed => "identity_unconfirmed",
            Self::PrincipalInUseElsewhere => "principal_in_use_elsewhere",
            Self::CheckFailed => "check_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Which service gave the answer a verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// Azure Resource Graph (bulk, eventually consistent: only ever used to say "healthy").
    ResourceGraph,
    /// An ARM GET of the resource: the authoritative answer.
    Arm,
    /// Nothing was asked (unparseable `alternativeNames`).
    None,
}

/// What the service said about the resource, reduced to what the judge needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// The resource exists (ARM answered 2xx with a JSON object whose `id` is the requested id, or
    /// Resource Graph listed it); `principal_id` is the principal it carries for this kind of identity
    /// (`identity.principalId`, or `properties.principalId` of a user-assigned identity), `None` when the
    /// answer shows none. `latest_version`: the answer was read with the newest api-version the provider
    /// lists, previews included, so an absent identity is not an older api-version's omission.
    Present {
        principal_id: Option<ObjectId>,
        #[serde(default)]
        latest_version: bool,
    },
    /// ARM answered with an error status and, when the body parsed, its `error.code` / `error.message`.
    Error {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// No answer: retries exhausted, timeouts, unreadable bodies. `what` says which.
    Failed { what: String },
    /// No check was made.
    NotChecked,
}

/// What Resource Graph listed for a resource in this scan: the principal its row carries (`None`: the row
/// shows no principal for this kind of identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphRow {
    pub principal_id: Option<ObjectId>,
}

/// The evidence for one identity, kept for support tickets.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub source: EvidenceSource,
    pub answer: Answer,
    /// Resource Graph's row for the resource, when it listed one (a second, independent witness that an
    /// identity is absent from an existing resource).
    pub resource_graph: Option<GraphRow>,
    /// Another resource that Resource Graph shows carrying this identity's principal (lower-case id): the
    /// identity is in use, whatever ARM says about the resource `alternativeNames` names (it may have
    /// moved, and the principal's `alternativeNames` not followed).
    pub carried_elsewhere: Option<String>,
    /// Whether the subscription of the resource is in `GET /subscriptions` for these credentials.
    /// `None` for management-group scope.
    pub subscription_visible: Option<bool>,
    pub request_id: Option<String>,
    pub correlation_request_id: Option<String>,
    pub checked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Evidence {
    pub fn not_checked() -> Self {
        Self {
            source: EvidenceSource::None,
            answer: Answer::NotChecked,
            resource_graph: None,
            carried_elsewhere: None,
            subscription_visible: None,
            request_id: None,
            correlation_request_id: None,
            checked_at: None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.answer {
            Answer::Present { .. } => Some(200),
            Answer::Error { status, .. } => Some(*status),
            Answer::Failed { .. } | Answer::NotChecked => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match &self.answer {
            Answer::Error { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// The judge's output for one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: Reason,
    /// One human sentence.
    pub detail: String,
}

/// What started a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Startup,
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Startup => "startup",
            Self::Cli => "cli",
        }
    }
}

/// The evidence of a finding, as reported and stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EvidenceReport {
    pub source: EvidenceSource,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub request_id: Option<String>,
    pub correlation_request_id: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
}

impl From<&Evidence> for EvidenceReport {
    fn from(e: &Evidence) -> Self {
        Self {
            source: e.source,
            status: e.status(),
            code: e.code().map(str::to_owned),
            request_id: e.request_id.clone(),
            correlation_request_id: e.correlation_request_id.clone(),
            checked_at: e.checked_at,
        }
    }
}

/// One identity's verdict in a scan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Finding {
    pub tenant_id: TenantId,
    pub object_id: ObjectId,
    pub app_id: String,
    pub display_name: String,
    pub identity_type: IdentityType,
    pub resource_id: Option<String>,
    pub subscription_id: Option<SubscriptionId>,
    pub resource_type: Option<String>,
    pub verdict: Verdict,
    pub reason: Reason,
    pub detail: String,
    pub evidence: EvidenceReport,
}

/// Verdicts counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Summary {
    pub total: u64,
    pub healthy: u64,
    pub orphaned: u64,
    pub unknown: u64,
}

impl Summary {
    pub fn merge(&mut self, o: &Summary) {
        self.total += o.total;
        self.healthy += o.healthy;
        self.orphaned += o.orphaned;
        self.unknown += o.unknown;
    }

    /// How many verdicts are `v`.
    pub fn count(&self, v: Verdict) -> u64 {
        match v {
            Verdict::Healthy => self.healthy,
            Verdict::Orphaned => self.orphaned,
            Verdict::Unknown => self.unknown,
        }
    }

    pub fn add(&mut self, v: Verdict) {
        self.add_n(v, 1);
    }

    /// Counts `n` verdicts `v`.
    pub fn add_n(&mut self, v: Verdict, n: u64) {
        self.total += n;
        match v {
            Verdict::Healthy => self.healthy += n,
            Verdict::Orphaned => self.orphaned += n,
            Verdict::Unknown => self.unknown += n,
        }
    }
}
