//! The OpenAPI 3.1 description of the HTTP API, served at `/api/v1/openapi.json`. It is generated from
//! the code (utoipa): the handlers' `#[utoipa::path]` attributes, the routes the router is built from
//! (`utoipa_axum::routes!` registers a handler and its description together, so a route cannot exist
//! without its description), and the serialised types' `ToSchema` derives.
//!
//! The query structs (`*Query`) describe and are not read: handlers parse the raw query strictly (an
//! unknown or repeated name is a 400) with [`super::Params::of`], which takes the names it accepts
//! from them. An empty text parameter is as if absent (`?tenant_id=` lists every tenant), which the patterns say;
//! an empty typed one (a number, a boolean, one of a set) is a 400.

use crate::domain::{RoleAssignment, Suppression};
use crate::store::{DanglingRow, HistoryEntry, ScanRecord, StoredFinding};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "miaudit",
        description = "Orphaned managed identities in Microsoft Entra ID tenants: findings, their \
lifecycle and evidence, scans, support-ticket exports, notifications and the allowlist.\n\n\
Errors are `application/problem+json` (RFC 9457). Lists are `{\"items\": [...], \"next_cursor\": \
\"opaque\" | null}`; pass `next_cursor` back as `cursor` for the next page. Mutating endpoints need \
`Authorization: Bearer <token>` (`[http] api_token`; without one they answer 403). With `[http] \
require_token_for_reads` every endpoint but `/healthz`, `/readyz` and `/metrics` needs the token.",
        license(name = "MIT", identifier = "MIT"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "findings", description = "Managed identities that are, or were, orphaned, and why"),
        (name = "scans", description = "Scans: when, whether complete, counts per verdict"),
        (name = "exports", description = "Support-ticket lists"),
        (name = "notifications", description = "The webhook outbox"),
        (name = "suppressions", description = "The allowlist"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer token scheme the mutating endpoints name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// An RFC 9457 problem, the body of every error.
#[derive(Serialize, ToSchema)]
pub struct ProblemBody {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What was wrong, for a person; never internal error text.
    pub detail: String,
}

/// `/healthz` and `/readyz` when they are well.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: String,
}

/// A finding with its history and its role assignments.
#[derive(Serialize, ToSchema)]
pub struct FindingDetail {
    #[serde(flatten)]
    pub finding: StoredFinding,
    /// Every transition, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The Azure role assignments the principal held when last looked up (blast radius).
    pub role_assignments: Vec<RoleAssignment>,
}

/// A page of findings.
#[derive(Serialize, ToSchema)]
pub struct FindingPage {
    pub items: Vec<StoredFinding>,
    /// The `cursor` of the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A page of scans, newest first.
#[derive(Serialize, ToSchema)]
pub struct ScanPage {
    pub items: Vec<ScanRecord>,
    pub next_cursor: Option<String>,
}

/// A scan that was started.
#[derive(Serialize, ToSchema)]
pub struct ScanStarted {
    pub scan_id: String,
    /// `running`.
    pub status: String,
    /// Where to follow it (also the `Location` header).
    pub href: String,
}

/// One delivery of the notification outbox (the sink by name, never its URL).
#[derive(Serialize, ToSchema)]
pub struct Notification {
    pub sink: String,
    pub event_id: String,
    /// `orphan.confirmed`, `orphan.resolved` or `digest`.
    #[serde(rename = "type")]
    pub kind: String,
    pub scan_id: String,
    pub occurred_at: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
}

/// A page of the notification outbox, newest first.
#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<Notification>,
    pub next_cursor: Option<String>,
}

/// A suppression with whether it is in force now.
#[derive(Serialize, ToSchema)]
pub struct SuppressionView {
    #[serde(flatten)]
    pub suppression: Suppression,
    pub active: bool,
}

/// Every suppression (one page: `next_cursor` is always null).
#[derive(Serialize, ToSchema)]
pub struct SuppressionList {
    pub items: Vec<SuppressionView>,
    pub next_cursor: Option<String>,
}

/// A suppression to make: at least one of the four selectors, a reason and an owner.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    pub tenant_id: Option<String>,
    pub subscription_id: Option<String>,
    pub object_id: Option<String>,
    /// A resource id; `*` matches any run of characters.
    pub resource_id: Option<String>,
    #[schema(min_length = 1, max_length = 1024)]
    pub reason: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub owner: String,
    /// A date (`2027-01-31`) or an RFC 3339 time.
    pub expires_at: Option<String>,
}

/// An acknowledgement: the Microsoft support case that will remove the orphan.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The support case number, 1 to 128 printable characters.
    #[schema(min_length = 1, max_length = 128)]
    pub ticket: String,
    /// At most 4,096 characters.
    #[schema(max_length = 4096)]
    #[serde(default)]
    pub note: Option<String>,
}

/// Dangling role assignments (one page: `next_cursor` is always null).
#[derive(Serialize, ToSchema)]
pub struct DanglingList {
    pub items: Vec<DanglingRow>,
    pub next_cursor: Option<String>,
}

/// The document as served: generated once, at start-up.
pub fn document(doc: utoipa::openapi::OpenApi) -> String {
    doc.to_json().unwrap_or_else(|_| "{}".to_owned())
}

/// Paging of a list.
#[allow(dead_code)] // described, not read (module doc)
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items a page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque: a cursor the server did not issue is a 400).
    #[param(pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// Filters of the findings list; all optional, combined with AND.
#[allow(dead_code)] // described, not read (module doc)
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindingQuery {
    /// States, comma-separated: suspected, confirmed, acknowledged, resolved, unverified, suppressed.
    #[param(
        pattern = r"^((suspected|confirmed|acknowledged|resolved|unverified|suppressed)(,(suspected|confirmed|acknowledged|resolved|unverified|suppressed))*)?$"
    )]
    pub state: Option<String>,
    pub verdict: Option<crate::domain::Verdict>,
    pub reason: Option<crate::domain::Reason>,
    /// A tenant id (compared case-insensitively).
    #[param(pattern = r"^([A-Za-z0-9._-]{1,256})?$")]
    pub tenant_id: Option<String>,
    pub identity_type: Option<crate::domain::IdentityType>,
    /// A subscription id.
    #[param(pattern = r"^([A-Za-z0-9._-]{1,256})?$")]
    pub subscription_id: Option<String>,
    /// An ARM resource type, e.g. `microsoft.compute/virtualmachines`.
    #[param(pattern = r"^[A-Za-z0-9./_-]{0,256}$")]
    pub resource_type: Option<String>,
    /// Only confirmed findings not yet exported into a ticket text in their current episode.
    pub awaiting_ticket: Option<bool>,
    /// Items a page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque: a cursor the server did not issue is a 400).
    #[param(pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// What to export.
#[allow(dead_code)] // described, not read (module doc)
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` (default), `json`, or `ticket` (a preview of the ticket text: reading it marks nothing).
    #[param(pattern = r"^(csv|json|ticket)?$")]
    pub format: Option<String>,
    /// A tenant id (compared case-insensitively).
    #[param(pattern = r"^([A-Za-z0-9._-]{1,256})?$")]
    pub tenant_id: Option<String>,
    /// States, comma-separated (default: the open ones: suspected, confirmed, acknowledged).
    #[param(
        pattern = r"^((suspected|confirmed|acknowledged|resolved|unverified|suppressed)(,(suspected|confirmed|acknowledged|resolved|unverified|suppressed))*)?$"
    )]
    pub state: Option<String>,
}

/// Narrows the outbox.
#[allow(dead_code)] // described, not read (module doc)
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    #[param(inline)]
    pub state: Option<NotificationState>,
    /// Items a page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque: a cursor the server did not issue is a 400).
    #[param(pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

#[allow(dead_code)] // described, not read (module doc)
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    Pending,
    Delivered,
    Dead,
}

/// Narrows a list to one tenant.
#[allow(dead_code)] // described, not read (module doc)
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// A tenant id (compared case-insensitively).
    #[param(pattern = r"^([A-Za-z0-9._-]{1,256})?$")]
    pub tenant_id: Option<String>,
}
