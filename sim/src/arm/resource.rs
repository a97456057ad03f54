//! ARM resource GETs and the collection lists a path that ends at a type asks for.

use super::{authorization_failed, subscription_gate};
use crate::model::World;
use crate::path;
use crate::respond::{arm_error, arm_headers, respond};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

/// Whether `key` (a lower-case resource id) lies in a resource group the caller may not read.
fn in_denied_group(w: &World, key: &str) -> bool {
    w.denied_resource_groups
        .iter()
        .any(|rg| key.starts_with(rg.as_str()) && key[rg.len()..].starts_with('/'))
}

/// `GET {resourceId}?api-version=` with ARM's order of checks: subscription, type and version,
/// authorization, resource group, parent, resource (ARM-ERR error-not-found.md; RPC). A path that ends
/// at a type is that type's list in that scope: `{"value": [...]}` (every ARM list operation, e.g.
/// `Namespaces_ListByResourceGroup` in the Service Bus spec), after the same checks.
pub(super) fn resource_get(
    w: &World,
    tenant: &str,
    raw: &str,
    p: &path::ResourcePath,
    version: &str,
    headers: &HeaderMap,
) -> Response {
    let action = format!("{}/{}/read", p.namespace(), p.type_path());
    let checked = check_scope(w, headers, p, &action, raw)
        .and_then(|()| check_type_and_version(w, headers, p, version))
        .and_then(|()| check_resource_group(w, headers, p, &action, raw));
    if let Err(r) = checked {
        return r;
    }
    if p.is_collection() {
        return collection(w, tenant, p, version, headers);
    }
    // A decoded separator inside a segment names no resource (see `path`).
    if !p.has_escaped_separator() {
        if let Some(r) = w.resources.get(&p.key()) {
            return respond(200, arm_headers(headers), &r.body_at(tenant, Some(version)));
        }
        if let Some(parent) = p.parent()
            && !w.resources.contains_key(&parent.key())
        {
            return parent_gone(headers, &parent);
        }
    }
    not_found(headers, p)
}

/// The subscription (or management group) the resource lies in.
fn check_scope(
    w: &World,
    headers: &HeaderMap,
    p: &path::ResourcePath,
    action: &str,
    raw: &str,
) -> Result<(), Response> {
    if let Some(sub) = p.subscription()
        && let Some(r) = subscription_gate(w, headers, sub, action, raw)
    {
        return Err(r);
    }
    if let Some(mg) = p.management_group()
        && !w.management_groups.contains(&mg.to_ascii_lowercase())
    {
        return Err(arm_error(
            headers,
            404,
            "ManagementGroupNotFound",
            &format!("Management group '{mg}' not found."),
        ));
    }
    Ok(())
}

/// The namespace, the type in it, and the api-version for that type.
fn check_type_and_version(
    w: &World,
    headers: &HeaderMap,
    p: &path::ResourcePath,
    version: &str,
) -> Result<(), Response> {
    let Some((_, types)) = w
        .providers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(p.namespace()))
    else {
        return Err(arm_error(
            headers,
            404,
            "InvalidResourceNamespace",
            &format!("The resource namespace '{}' is invalid.", p.namespace()),
        ));
    };
    let Some((tname, versions)) = types
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(&p.type_path()))
    else {
        return Err(arm_error(
            headers,
            404,
            "InvalidResourceType",
            &format!(
                "The resource type '{}' could not be found in the namespace '{}' for api version '{version}'.",
                p.type_path(),
                p.namespace()
            ),
        ));
    };
    let accepted: Vec<&str> = versions
        .iter()
        .map(String::as_str)
        .filter(|v| !w.refused_versions.contains(*v))
        .collect();
    if !accepted.contains(&version) {
        return Err(arm_error(
            headers,
            400,
            "NoRegisteredProviderFound",
            &format!(
                "No registered resource provider found for location 'westeurope' and API version '{version}' for type '{tname}'. The supported api-versions are '{}'. The supported locations are 'westeurope, eastus, swedencentral'.",
                accepted.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The resource group, when the resource lies in one: readable, then existing.
fn check_resource_group(
    w: &World,
    headers: &HeaderMap,
    p: &path::ResourcePath,
    action: &str,
    raw: &str,
) -> Result<(), Response> {
    if let (Some(sub), Some(rg)) = (p.subscription(), p.resource_group()) {
        let rg_key = format!("/subscriptions/{sub}/resourcegroups/{rg}").to_ascii_lowercase();
        if w.denied_resource_groups.contains(&rg_key) {
            return Err(authorization_failed(w, headers, action, raw));
        }
        if !w.resource_groups.contains(&rg_key) {
            return Err(arm_error(
                headers,
                404,
                "ResourceGroupNotFound",
                &format!("Resource group '{rg}' could not be found."),
            ));
        }
    }
    Ok(())
}

/// A nested child (or list of children) whose parent is gone.
fn parent_gone(headers: &HeaderMap, parent: &path::ResourcePath) -> Response {
    arm_error(
        headers,
        404,
        "ParentResourceNotFound",
        &format!(
            "Can not perform requested operation on nested resource. Parent resource '{}' not found.",
            parent.name().unwrap_or("")
        ),
    )
}

/// The list a path that ends at a type names: the resources of that type in that scope.
fn collection(
    w: &World,
    tenant: &str,
    p: &path::ResourcePath,
    version: &str,
    headers: &HeaderMap,
) -> Response {
    if let Some(parent) = p.parent()
        && !w.resources.contains_key(&parent.key())
    {
        return parent_gone(headers, &parent);
    }
    let value: Vec<Value> = w
        .resources
        .iter()
        .filter(|(k, _)| !in_denied_group(w, k))
        .filter(|(_, r)| match path::parse(&r.id) {
            Ok(path::Route::Resource(m)) => p.lists(&m),
            _ => false,
        })
        .map(|(_, r)| r.body_at(tenant, Some(version)))
        .collect();
    respond(200, arm_headers(headers), &json!({ "value": value }))
}

/// ARM's 404 for a resource that is not there. Resource providers use their own not-found codes
/// (ARM-ERR; captures in the docs/azure-behaviour.md §4).
fn not_found(headers: &HeaderMap, p: &path::ResourcePath) -> Response {
    let name = p.name().unwrap_or("");
    let (code, message) = if p
        .namespace()
        .eq_ignore_ascii_case("Microsoft.Authorization")
    {
        (
            "PolicyAssignmentNotFound",
            format!("The policy assignment '{name}' is not found."),
        )
    } else if p.namespace().eq_ignore_ascii_case("Microsoft.Sql") {
        ("NotFound", format!("Cannot find Server with name {name}."))
    } else {
        (
            "ResourceNotFound",
            format!(
                "The Resource '{}/{}/{name}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                p.namespace(),
                p.type_path(),
                p.resource_group().unwrap_or("")
            ),
        )
    };
    arm_error(headers, 404, code, &message)
}
