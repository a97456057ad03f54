//! Blast radius: the Azure role assignments an orphaned principal still holds. Microsoft documents that
//! role assignments of a deleted principal keep granting access while its tokens are valid, so an orphan
//! holding Owner is a security finding, not housekeeping.

use serde::{Deserialize, Serialize};

/// One role assignment of a principal, as Resource Graph (`authorizationresources`) shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoleAssignment {
    /// The assignment's resource id.
    pub id: String,
    /// `/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
    pub role_definition_id: String,
    /// The role's name when Resource Graph showed its definition.
    pub role_name: Option<String>,
    /// Where it applies (subscription, resource group or resource).
    pub scope: String,
    /// Owner, Contributor, User Access Administrator, Role Based Access Control Administrator: roles that
    /// grant write access to everything in scope or the right to grant access.
    pub privileged: bool,
}

/// A role assignment whose principal no longer exists (the portal shows "Identity not found"): the
/// same clean-up job as an orphaned principal. Only assignments to service principals are judged
/// (Graph's answer about them needs nothing beyond the permission miaudit already has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DanglingAssignment {
    /// The principal id the assignment names, lower-case.
    pub principal_id: String,
    #[serde(flatten)]
    pub assignment: RoleAssignment,
    /// When the assignment was made, as Resource Graph shows it.
    pub created_on: Option<chrono::DateTime<chrono::Utc>>,
}

/// One scan's judgement of dangling role assignments: the subscriptions it asked about (only their
/// stored rows are replaced) and the assignments it found dangling there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DanglingCheck {
    pub subscriptions: Vec<String>,
    pub found: Vec<DanglingAssignment>,
}

/// Built-in roles that make an orphan high risk, by GUID (Microsoft's "Azure built-in roles" page:
/// the privileged administrator roles).
pub const PRIVILEGED_ROLES: &[(&str, &str)] = &[
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner"),
    ("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor"),
    (
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "User Access Administrator",
    ),
    (
        "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        "Role Based Access Control Administrator",
    ),
];

/// The GUID a role definition id ends with, lower-case.
pub fn role_guid(role_definition_id: &str) -> String {
    role_definition_id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Whether a role (by definition id) is one of [`PRIVILEGED_ROLES`]. By GUID, never by name: a
/// custom role may be called anything.
pub fn is_privileged(role_definition_id: &str) -> bool {
    let guid = role_guid(role_definition_id);
    PRIVILEGED_ROLES.iter().any(|(g, _)| *g == guid)
}

/// A string made only of GUID characters (hex digits and dashes, 36 long): safe to put into a query.
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_roles_are_known_by_guid_only() {
        assert!(is_privileged(
            "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/8E3AF657-A8FF-443C-A75C-2FE8C4BCB635"
        ));
        assert!(!is_privileged(
            "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
        ));
        assert!(is_guid("acdd72a7-3385-48ef-bd42-f606fba81ae7"));
        assert!(!is_guid(
            "acdd72a7-3385-48ef-bd42-f606fba81ae7') or 1==1 //"
        ));
    }
}
