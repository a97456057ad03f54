//! Managed identities as Graph lists them, with `alternativeNames` parsed by shape, never by position:
//! community scripts note that the resource id does not always stand at the same index (docs/azure-behaviour.md §1,
//! "Response shape").

use super::{ObjectId, ResourceId, TenantId};
use serde::{Deserialize, Serialize};

/// Whether a managed identity is user-assigned (`isExplicit=True`) or system-assigned (`isExplicit=False`
/// or no marker at all), per the subscription-transfer doc's criteria (docs/azure-behaviour.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A managed-identity service principal as listed by Graph, with its `alternativeNames` parsed.
#[derive(Debug, Clone)]
pub struct ManagedIdentity {
    pub tenant_id: TenantId,
    /// Service principal object id; also the `principalId` the resource carries.
    pub object_id: ObjectId,
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
        tenant_id: &TenantId,
        object_id: ObjectId,
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
            tenant_id: tenant_id.clone(),
            object_id,
            app_id,
            display_name,
            identity_type,
            resource,
            alternative_names,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mi(names: &[&str]) -> ManagedIdentity {
        ManagedIdentity::from_alternative_names(
            &"t".into(),
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
