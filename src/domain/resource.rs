//! ARM resource ids as `alternativeNames` name them: parsed strictly, compared case-insensitively.

use super::SubscriptionId;
use std::fmt;

/// Where an ARM resource id is anchored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `/providers/Microsoft.Management/managementGroups/{id}`
    ManagementGroup(String),
    /// `/subscriptions/{id}[/resourceGroups/{name}]`
    Subscription {
        subscription_id: SubscriptionId,
        resource_group: Option<String>,
    },
}

/// A parsed ARM resource id. Keeps the original text (support tickets quote it verbatim) and compares
/// case-insensitively, as ARM treats ids (RPC "Case Insensitivity for Requests"; docs/azure-behaviour.md §3 casing).
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
            let subscription_id = SubscriptionId::new(segs.get(1)?);
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

    /// The subscription, lower-cased (the id's text keeps its case).
    pub fn subscription_id(&self) -> Option<&SubscriptionId> {
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
            id.subscription_id().map(SubscriptionId::as_str),
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
        assert_eq!(
            sub.subscription_id().map(SubscriptionId::as_str),
            Some("s1")
        );
        let upper = ResourceId::parse(
            "/subscriptions/FC3CA501-AAAA-0000-0000-000000000000/providers/Microsoft.Authorization/policyAssignments/pa1",
        )
        .expect("parses");
        assert_eq!(
            upper.subscription_id().map(SubscriptionId::as_str),
            Some("fc3ca501-aaaa-0000-0000-000000000000"),
            "the subscription is lower-cased, the id's text is not"
        );
        assert!(upper.as_str().contains("FC3CA501-AAAA"));
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
}
