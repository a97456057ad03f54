//! Plain data of the audit: managed identities as Graph lists them, the ARM resource ids their
//! `alternativeNames` point at, and the verdicts the judge gives. No I/O here, no sqlx or reqwest types.
//!
//! `alternativeNames` is parsed by shape, never by position: community scripts note that the resource id
//! does not always stand at the same index (facts sheet §1, "Response shape").

use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether a managed identity is user-assigned (`isExplicit=True`) or system-assigned (`isExplicit=False`
/// or no marker at all), per the subscription-transfer doc's criteria (facts sheet §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityType {
    SystemAssigned,
    UserAssigned,
}

impl IdentityType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemAssigned => "system_assigned",
            Self::UserAssigned => "user_assigned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system_assigned" => Some(Self::SystemAssigned),
            "user_assigned" => Some(Self::UserAssigned),
            _ => None,
        }
    }
}

/// Where an ARM resource id is anchored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `/providers/Microsoft.Management/managementGroups/{id}`
    ManagementGroup(String),
    /// `/subscriptions/{id}[/resourceGroups/{name}]`
    Subscription {
        subscription_id: String,
        resource_group: Option<String>,
    },
}

/// A parsed ARM resource id. Keeps the original text (support tickets quote it verbatim) and compares
/// case-insensitively, as ARM treats ids (RPC "Case Insensitivity for Requests"; facts sheet §3 casing).
/// Only the text and the offset of the resource's provider namespace are stored; the parts are read
/// from the text on demand (at 100k identities, owned copies of every part cost ~40 MB).
#[derive(Debug, Clone)]
pub struct ResourceId {
    raw: String,
    scope: Scope,
    /// Byte offset in `raw` of the namespace of the last `providers/` block (the resource itself).
    ns_at: usize,
}

impl ResourceId {
    /// Parses an ARM id of a resource (not of a bare scope). Returns `None` for anything else.
    ///
    /// Strict, because the id becomes the path of the ARM GET whose answer can make an orphan: a segment
    /// that is empty, `.` or `..` would be normalised away by the URL library (the GET would go to a
    /// parent or a collection, and its answer would be about something else), and `%`, `?`, `#` or `\`
    /// could smuggle a separator, a query or a fragment into the path. Such an id is not a resource id
    /// we can check; the identity is reported as `unrecognized_alternative_names`.
    /// White space and control characters anywhere, and a trailing `/` (an empty last segment), are not
    /// accepted either.
    pub fn parse(text: &str) -> Option<Self> {
        let trimmed = text;
        if !trimmed.starts_with('/') || trimmed.len() > 4096 {
            return None;
        }
        let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
        if segs.iter().any(|s| !is_plain_segment(s)) {
            return None;
        }
        // Byte offset of each segment in `trimmed`.
        let mut offsets = Vec::with_capacity(segs.len());
        let mut pos = 1;
        for s in &segs {
            offsets.push(pos);
            pos += s.len() + 1;
        }
        let mut i: usize;
        let scope = if segs
            .first()
            .is_some_and(|s| s.eq_ignore_ascii_case("subscriptions"))
        {
            let subscription_id = (*segs.get(1)?).to_owned();
            i = 2;
            let resource_group = if segs
                .get(i)
                .is_some_and(|s| s.eq_ignore_ascii_case("resourceGroups"))
            {
                let rg = (*segs.get(i + 1)?).to_owned();
                i += 2;
                Some(rg)
            } else {
                None
            };
            Scope::Subscription {
                subscription_id,
                resource_group,
            }
        } else if segs.len() >= 4
            && segs[0].eq_ignore_ascii_case("providers")
            && segs[1].eq_ignore_ascii_case("Microsoft.Management")
            && segs[2].eq_ignore_ascii_case("managementGroups")
        {
            i = 4;
            Scope::ManagementGroup(segs[3].to_owned())
        } else {
            return None;
        };
        // The resource itself: one or more `providers/{namespace}/{type}/{name}(/{type}/{name})*` blocks;
        // the last block is the resource (earlier ones are parents of an extension resource).
        let mut ns_at = None;
        while i < segs.len() {
            if !segs[i].eq_ignore_ascii_case("providers") {
                return None;
            }
            let namespace = *segs.get(i + 1)?;
            if !namespace.contains('.') {
                return None;
            }
            let at = offsets[i + 1];
            i += 2;
            let mut pairs = 0;
            while i < segs.len() && !segs[i].eq_ignore_ascii_case("providers") {
                segs.get(i + 1)?;
                i += 2;
                pairs += 1;
            }
            if pairs == 0 {
                return None;
            }
            ns_at = Some(at);
        }
        Some(Self {
            raw: trimmed.to_owned(),
            scope,
            ns_at: ns_at?,
        })
    }

    /// `namespace/type/name(/type/name)*` of the resource itself.
    fn provider_part(&self) -> &str {
        &self.raw[self.ns_at..]
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Lower-cased id, the join key between Graph, Resource Graph and ARM.
    pub fn key(&self) -> String {
        self.raw.to_ascii_lowercase()
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn subscription_id(&self) -> Option<&str> {
        match &self.scope {
            Scope::Subscription {
                subscription_id, ..
            } => Some(subscription_id),
            Scope::ManagementGroup(_) => None,
        }
    }

    pub fn resource_group(&self) -> Option<&str> {
        match &self.scope {
            Scope::Subscription { resource_group, .. } => resource_group.as_deref(),
            Scope::ManagementGroup(_) => None,
        }
    }

    pub fn namespace(&self) -> &str {
        self.provider_part().split('/').next().unwrap_or("")
    }

    /// The type below the namespace as the providers API spells it: `sites/slots`.
    pub fn type_path(&self) -> String {
        self.provider_part()
            .split('/')
            .skip(1)
            .step_by(2)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Full lower-cased type as Resource Graph reports it: `microsoft.web/sites/slots`.
    pub fn full_type(&self) -> String {
        format!("{}/{}", self.namespace(), self.type_path()).to_ascii_lowercase()
    }

    pub fn name(&self) -> &str {
        self.raw.rsplit('/').next().unwrap_or("")
    }

    pub fn is_user_assigned_identity(&self) -> bool {
        self.full_type() == USER_ASSIGNED_IDENTITY_TYPE
    }
}

/// A path segment that names itself: not empty, not `.` / `..`, and free of characters that a URL
/// library or a server would read as structure (`%` escapes, `?`, `#`, a backslash), white space and control
/// characters.
fn is_plain_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '%' | '?' | '#' | '\\'))
}

/// ARM type of user-assigned identity resources, lower-cased as Resource Graph reports types.
pub const USER_ASSIGNED_IDENTITY_TYPE: &str = "microsoft.managedidentity/userassignedidentities";

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.raw.eq_ignore_ascii_case(&other.raw)
    }
}
impl Eq for ResourceId {}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A managed-identity service principal as listed by Graph, with its `alternativeNames` parsed.
#[derive(Debug, Clone)]
pub struct ManagedIdentity {
    pub tenant_id: String,
    /// Service principal object id; also the `principalId` the resource carries.
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    pub identity_type: IdentityType,
    /// `None` when no element of `alternativeNames` is a recognisable ARM resource id.
    pub resource: Option<ResourceId>,
    /// The raw `alternativeNames`, kept only when they gave no resource (the report quotes them then);
    /// at 100k identities keeping them all would cost ~25 MB for nothing.
    pub alternative_names: Vec<String>,
}

impl ManagedIdentity {
    /// Parses `alternativeNames`. Never fails: unrecognised input leaves `resource` empty, which the judge
    /// turns into `unknown` / `unrecognized_alternative_names`.
    pub fn from_alternative_names(
        tenant_id: &str,
        object_id: String,
        app_id: String,
        display_name: String,
        alternative_names: Vec<String>,
    ) -> Self {
        let mut explicit: Option<Option<bool>> = None;
        let mut resource = None;
        for name in &alternative_names {
            if let Some(v) = name
                .get(..11)
                .filter(|p| p.eq_ignore_ascii_case("isExplicit="))
                .map(|_| &name[11..])
            {
                let parsed = if v.eq_ignore_ascii_case("true") {
                    Some(true)
                } else if v.eq_ignore_ascii_case("false") {
                    Some(false)
                } else {
                    None
                };
                explicit = Some(parsed);
            } else if resource.is_none() {
                resource = ResourceId::parse(name);
            }
        }
        let is_uami = resource
            .as_ref()
            .is_some_and(ResourceId::is_user_assigned_identity);
        let identity_type = match explicit {
            Some(Some(true)) => IdentityType::UserAssigned,
            // No marker: the resource's type tells (a user-assigned identity resource has no
            // system-assigned identity of its own).
            None if is_uami => IdentityType::UserAssigned,
            _ => IdentityType::SystemAssigned,
        };
        // An `isExplicit=` marker we cannot read, or one that contradicts the resource's type, means we do
        // not know which principal to compare: comparing the wrong one would look like a mismatch.
        let contradicts = matches!(explicit, Some(Some(user)) if user != is_uami);
        if matches!(explicit, Some(None)) || contradicts {
            resource = None;
        }
        let alternative_names = if resource.is_some() {
            Vec::new()
        } else {
            alternative_names
        };
        Self {
            tenant_id: tenant_id.to_owned(),
            object_id: object_id.trim().to_owned(),
            app_id,
            display_name,
            identity_type,
            resource,
            alternative_names,
        }
    }
}

/// The three verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// Reason codes of ARCHITECTURE.md's verdict rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
        principal_id: Option<String>,
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
    pub principal_id: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_id_with_lowercase_resourcegroups_segment() {
        let id = ResourceId::parse(
            "/subscriptions/fc3ca501-0000-0000-0000-000000000000/resourcegroups/VM/providers/Microsoft.Compute/virtualMachines/VM2",
        )
        .expect("parses");
        assert_eq!(
            id.subscription_id(),
            Some("fc3ca501-0000-0000-0000-000000000000")
        );
        assert_eq!(id.resource_group(), Some("VM"));
        assert_eq!(id.namespace(), "Microsoft.Compute");
        assert_eq!(id.type_path(), "virtualMachines");
        assert_eq!(id.full_type(), "microsoft.compute/virtualmachines");
        assert_eq!(id.name(), "VM2");
    }

    #[test]
    fn parses_nested_slot_and_compares_case_insensitively() {
        let a = ResourceId::parse(
            "/subscriptions/s1/resourceGroups/RG/providers/Microsoft.Web/sites/app/slots/staging",
        )
        .expect("parses");
        let b = ResourceId::parse(
            "/SUBSCRIPTIONS/S1/resourcegroups/rg/providers/microsoft.web/SITES/App/Slots/Staging",
        )
        .expect("parses");
        assert_eq!(a, b);
        assert_eq!(a.type_path(), "sites/slots");
        assert_eq!(a.name(), "staging");
        assert_eq!(
            b.as_str(),
            "/SUBSCRIPTIONS/S1/resourcegroups/rg/providers/microsoft.web/SITES/App/Slots/Staging"
        );
    }

    #[test]
    fn parses_management_group_and_subscription_policy_assignments() {
        let mg = ResourceId::parse("/providers/Microsoft.Management/managementGroups/root-mg/providers/Microsoft.Authorization/policyAssignments/deploy-diag").expect("parses");
        assert_eq!(mg.scope(), &Scope::ManagementGroup("root-mg".into()));
        assert_eq!(mg.subscription_id(), None);
        assert_eq!(mg.namespace(), "Microsoft.Authorization");
        assert_eq!(mg.type_path(), "policyAssignments");
        let sub = ResourceId::parse(
            "/subscriptions/s1/providers/Microsoft.Authorization/policyAssignments/pa1",
        )
        .expect("parses");
        assert_eq!(sub.resource_group(), None);
        assert_eq!(sub.subscription_id(), Some("s1"));
    }

    #[test]
    fn rejects_shapes_that_are_not_resource_ids() {
        for bad in [
            "",
            "/",
            "not-an-id",
            "https://identity.azure.net/abc=",
            "/subscriptions/",
            "/subscriptions/s1",
            "/subscriptions/s1/resourceGroups/rg",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines",
            "/subscriptions/s1/resourceGroups/rg/providers/NoDot/virtualMachines/vm",
            "/subscriptions/s1//resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
            "/subscriptions/s1/resourceGroups/rg/foo/bar",
            "/providers/Microsoft.Management/managementGroups/mg",
            "/subscriptions/s 1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
        ] {
            assert!(ResourceId::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }

    fn mi(names: &[&str]) -> ManagedIdentity {
        ManagedIdentity::from_alternative_names(
            "t",
            "oid".into(),
            "app".into(),
            "dn".into(),
            names.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    #[test]
    fn alternative_names_are_parsed_by_shape_not_position() {
        let uami = mi(&[
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
            "isExplicit=True",
        ]);
        assert_eq!(uami.identity_type, IdentityType::UserAssigned);
        assert!(
            uami.resource
                .as_ref()
                .is_some_and(ResourceId::is_user_assigned_identity)
        );

        let sys = mi(&[
            "isExplicit=False",
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
        ]);
        assert_eq!(sys.identity_type, IdentityType::SystemAssigned);

        let no_marker = mi(&[
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
        ]);
        assert_eq!(no_marker.identity_type, IdentityType::SystemAssigned);
        assert!(no_marker.resource.is_some());
    }

    #[test]
    fn a_marker_that_contradicts_the_resource_type_leaves_no_resource() {
        let vm =
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm";
        let uami = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";
        assert!(mi(&["isExplicit=True", vm]).resource.is_none());
        assert!(mi(&["isExplicit=False", uami]).resource.is_none());
        let unmarked = mi(&[uami]);
        assert_eq!(unmarked.identity_type, IdentityType::UserAssigned);
        assert!(unmarked.resource.is_some());
    }

    #[test]
    fn odd_ids_are_not_resource_ids() {
        let base =
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm";
        for bad in [
            format!("{base}/.."),
            format!("{base}/."),
            format!("{base}//"),
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/../virtualMachines/vm".to_owned(),
            "/subscriptions/s1/resourceGroups/./rg/providers/Microsoft.Compute/virtualMachines/vm".to_owned(),
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm%2F..".to_owned(),
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines%2fvm".to_owned(),
            format!("{base}?api-version=1"),
            format!("{base}#x"),
            format!("{base}\\x"),
            format!("{base} "),
            format!(" {base}"),
            format!("{base}\t"),
            format!("{base}\u{0}"),
        ] {
            assert!(ResourceId::parse(&bad).is_none(), "{bad:?} should not parse");
        }
        assert!(
            ResourceId::parse(&format!("{base}/")).is_none(),
            "a trailing slash is an empty segment"
        );
    }

    #[test]
    fn unreadable_alternative_names_leave_no_resource() {
        assert!(mi(&[]).resource.is_none());
        assert!(mi(&["isExplicit=True"]).resource.is_none());
        assert!(mi(&["isExplicit=True", "garbage"]).resource.is_none());
        assert!(
            mi(&[
                "isExplicit=maybe",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
            ])
            .resource
            .is_none()
        );
    }
}
