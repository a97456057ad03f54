//! The simulated cloud: one directory tenant with its service principals, the subscriptions and
//! resources ARM knows, who may read what, and what Resource Graph has indexed. Tests build worlds
//! scenario by scenario; [`World::generate`] builds a realistic seeded tenant.
//!
//! Shapes follow the documented ones: service principals as G-SP / the captures in the docs/azure-behaviour.md §1
//! (`alternativeNames` = `isExplicit=...` + the resource id, resource-group segment often lower-case);
//! resources as ARM returns them (`identity.principalId` for system-assigned, user-assigned identity
//! resources with `properties.principalId`, MSI-SPEC).

mod generate;
mod odd_id;
mod providers;

pub use odd_id::OddId;
pub use providers::default_providers;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// A deterministic generator (SplitMix64): the simulator must be repeatable from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
    pub fn guid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

/// What the auditing application may do in a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubAccess {
    /// Reader: listed by `GET /subscriptions`, readable.
    Reader,
    /// In this tenant, but no role: not listed; ARM answers 403 `AuthorizationFailed`.
    NoAccess,
    /// Moved to another directory: not listed; ARM answers 401 `InvalidAuthenticationTokenTenant`.
    Transferred { to_tenant: String },
    /// Cancelled and gone: not listed; ARM answers 404 `SubscriptionNotFound`.
    Deleted,
}

#[derive(Debug, Clone)]
pub struct SimSubscription {
    pub id: String,
    pub display_name: String,
    pub access: SubAccess,
}

/// An ARM resource.
#[derive(Debug, Clone)]
pub struct SimResource {
    /// As ARM spells it (`resourceGroups`, provider casing).
    pub id: String,
    /// `Namespace/type[/child]` in ARM casing.
    pub arm_type: String,
    pub location: String,
    /// `identity.principalId`: system-assigned principal (or a policy assignment's).
    pub system_principal: Option<String>,
    /// `properties.principalId` of a user-assigned identity resource.
    pub uami_principal: Option<String>,
    pub uami_client_id: Option<String>,
    /// ARM `kind`, e.g. `functionapp` for a function app (a `Microsoft.Web/sites` resource).
    pub kind: Option<String>,
    /// The api-version that brought `identity` to this resource type: older versions answer without it,
    /// as versions that predate a type's managed-identity support do (Service Bus namespaces: the stable
    /// 2017-04-01 `SBNamespace` has no `identity`, 2018-01-01-preview added it; azure-rest-api-specs
    /// `servicebus/.../stable/2017-04-01/servicebus.json`, `preview/2018-01-01-preview/namespace-preview.json`).
    /// `None`: every version carries it.
    pub identity_since: Option<String>,
}

impl SimResource {
    pub fn key(&self) -> String {
        self.id.to_ascii_lowercase()
    }

    /// The ARM GET body (RPC resource envelope) as the newest api-version answers it.
    pub fn body(&self, tenant: &str) -> Value {
        self.body_at(tenant, None)
    }

    /// Whether the answer of `api_version` carries `identity` (compared by the version's date).
    pub fn identity_in(&self, api_version: &str) -> bool {
        let date = |v: &str| v.get(..10).unwrap_or(v).to_owned();
        self.identity_since
            .as_deref()
            .is_none_or(|since| date(api_version) >= date(since))
    }

    /// The ARM GET body as `api_version` answers it (`None`: the newest): without `identity` in versions
    /// older than [`SimResource::identity_since`].
    pub fn body_at(&self, tenant: &str, api_version: Option<&str>) -> Value {
        let mut v = self.full_body(tenant);
        if api_version.is_some_and(|a| !self.identity_in(a))
            && let Some(o) = v.as_object_mut()
        {
            o.remove("identity");
        }
        v
    }

    fn full_body(&self, tenant: &str) -> Value {
        let name = self.id.rsplit('/').next().unwrap_or("");
        let mut v = json!({
            "id": self.id,
            "name": name,
            "type": self.arm_type,
            "location": self.location,
            "tags": {},
            "properties": { "provisioningState": "Succeeded" },
        });
        if let Some(k) = &self.kind {
            v["kind"] = json!(k);
        }
        if let Some(p) = &self.system_principal {
            v["identity"] =
                json!({ "type": "SystemAssigned", "principalId": p, "tenantId": tenant });
        } else if self.uami_principal.is_none()
            && !self
                .arm_type
                .eq_ignore_ascii_case("Microsoft.Authorization/policyAssignments")
        {
            v["identity"] = json!({ "type": "None" });
        }
        if let Some(p) = &self.uami_principal {
            v["properties"] = json!({
                "principalId": p,
                "clientId": self.uami_client_id,
                "tenantId": tenant,
                "isolationScope": "None",
            });
        }
        v
    }

    /// The Resource Graph row (ARG-SPEC example shape: lower-case `type`, `resourceGroup`). Resource
    /// Graph reads resources with the newest non-preview api-version of their provider (ARG overview,
    /// docs/azure-behaviour.md §3): `stable_version` is that version, which decides whether `identity` shows.
    pub fn arg_row(&self, tenant: &str, stable_version: Option<&str>) -> Value {
        let mut v = self.body_at(tenant, stable_version);
        let segs: Vec<&str> = self.id.split('/').collect();
        let sub = segs.get(2).copied().unwrap_or("");
        let rg = segs
            .iter()
            .position(|s| s.eq_ignore_ascii_case("resourceGroups"))
            .and_then(|i| segs.get(i + 1))
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default();
        v["type"] = json!(self.arm_type.to_ascii_lowercase());
        v["subscriptionId"] = json!(sub);
        v["resourceGroup"] = json!(rg);
        v["tenantId"] = json!(tenant);
        if v.get("identity").is_none() {
            v["identity"] = Value::Null;
        }
        v
    }
}

/// A service principal as Graph returns it.
#[derive(Debug, Clone)]
pub struct SimPrincipal {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    pub sp_type: String,
    pub alternative_names: Option<Vec<String>>,
}

impl SimPrincipal {
    /// The JSON with only the `$select`ed properties (matched case-insensitively) and `id`, which Graph
    /// always returns (G-LIST).
    pub fn to_json_selected(&self, select: Option<&[String]>) -> Value {
        let full = self.to_json();
        let Some(props) = select else { return full };
        let mut m = serde_json::Map::new();
        m.insert("id".into(), full["id"].clone());
        for prop in props {
            if let Some((k, v)) = full
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(prop)))
            {
                m.insert(k.clone(), v.clone());
            }
        }
        Value::Object(m)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "@odata.type": "#microsoft.graph.servicePrincipal",
            "id": self.id,
            "appId": self.app_id,
            "displayName": self.display_name,
            "servicePrincipalType": self.sp_type,
            "alternativeNames": self.alternative_names,
            "accountEnabled": true,
            "servicePrincipalNames": [self.app_id],
        })
    }
}

/// The simulated directory and cloud.
#[derive(Debug, Clone)]
pub struct World {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub subscriptions: Vec<SimSubscription>,
    /// Lower-case `/subscriptions/{s}/resourcegroups/{rg}` of existing resource groups.
    pub resource_groups: BTreeSet<String>,
    /// Lower-case of the same form, for groups where the auditor gets 403.
    pub denied_resource_groups: BTreeSet<String>,
    /// Lower-case management group names.
    pub management_groups: BTreeSet<String>,
    /// Keyed by lower-case id, ordered (Resource Graph orders by id).
    pub resources: BTreeMap<String, SimResource>,
    /// Lower-case ids ARM has that Resource Graph does not show yet.
    pub arg_lag: BTreeSet<String>,
    pub principals: Vec<SimPrincipal>,
    pub providers: BTreeMap<String, Vec<(String, Vec<String>)>>,
    /// Versions the providers API still lists but resource GETs refuse (`NoRegisteredProviderFound`),
    /// as when the providers metadata lags a retired version.
    pub refused_versions: BTreeSet<String>,
    /// Azure role assignments (Resource Graph `authorizationresources`); they outlive the principal
    /// they name, as in Azure (the portal shows such a one as "Identity not found").
    pub role_assignments: Vec<SimRoleAssignment>,
    /// Resources deleted by [`World::churn`], some of which it brings back.
    graveyard: Vec<SimResource>,
    rng: Rng,
}

/// One Azure role assignment: `scope` gives `principal_id` the role `role` (a role definition GUID).
#[derive(Debug, Clone)]
pub struct SimRoleAssignment {
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`.
    pub id: String,
    pub scope: String,
    pub role: String,
    pub principal_id: String,
}

/// Built-in Azure roles the simulator knows (GUID, name): the names and GUIDs of Microsoft's
/// "Azure built-in roles" page.
pub const BUILT_IN_ROLES: &[(&str, &str)] = &[
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner"),
    ("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor"),
    ("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader"),
    (
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "User Access Administrator",
    ),
    (
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "Storage Blob Data Contributor",
    ),
];

/// The credentials the simulator accepts, for configs that point at it.
pub const SIM_CLIENT_ID: &str = "5e3ce6c0-2b1f-4285-8d4b-75ee78787346";
pub const SIM_CLIENT_SECRET: &str = "sim-secret-not-a-real-one";
pub const SIM_TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

impl World {
    pub fn new(tenant_id: &str, seed: u64) -> Self {
        Self {
            tenant_id: tenant_id.to_ascii_lowercase(),
            client_id: SIM_CLIENT_ID.to_owned(),
            client_secret: SIM_CLIENT_SECRET.to_owned(),
            subscriptions: Vec::new(),
            resource_groups: BTreeSet::new(),
            denied_resource_groups: BTreeSet::new(),
            management_groups: BTreeSet::new(),
            resources: BTreeMap::new(),
            arg_lag: BTreeSet::new(),
            principals: Vec::new(),
            providers: default_providers(),
            refused_versions: BTreeSet::new(),
            role_assignments: Vec::new(),
            graveyard: Vec::new(),
            rng: Rng::new(seed),
        }
    }

    /// Gives `principal_id` the built-in or custom role `role` (a GUID) at `scope` (a subscription,
    /// resource group or resource id); returns the assignment's id.
    pub fn add_role_assignment(&mut self, scope: &str, role: &str, principal_id: &str) -> String {
        let id = format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}",
            scope.trim_end_matches('/'),
            self.guid()
        );
        self.role_assignments.push(SimRoleAssignment {
            id: id.clone(),
            scope: scope.to_owned(),
            role: role.to_owned(),
            principal_id: principal_id.to_owned(),
        });
        id
    }

    pub fn guid(&mut self) -> String {
        self.rng.guid()
    }

    pub fn subscription(&self, id: &str) -> Option<&SimSubscription> {
        self.subscriptions
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(id))
    }

    /// Adds a subscription and returns its id.
    pub fn add_subscription(&mut self, name: &str, access: SubAccess) -> String {
        let id = self.guid();
        self.subscriptions.push(SimSubscription {
            id: id.clone(),
            display_name: name.to_owned(),
            access,
        });
        id
    }

    pub fn set_access(&mut self, sub: &str, access: SubAccess) {
        if let Some(s) = self
            .subscriptions
            .iter_mut()
            .find(|s| s.id.eq_ignore_ascii_case(sub))
        {
            s.access = access;
        }
    }

    pub fn add_resource_group(&mut self, sub: &str, rg: &str) {
        self.resource_groups
            .insert(format!("/subscriptions/{sub}/resourcegroups/{rg}").to_ascii_lowercase());
    }

    pub fn delete_resource_group(&mut self, sub: &str, rg: &str) {
        let key = format!("/subscriptions/{sub}/resourcegroups/{rg}").to_ascii_lowercase();
        self.resource_groups.remove(&key);
        let prefix = format!("{key}/");
        self.resources.retain(|k, _| !k.starts_with(&prefix));
    }

    pub fn deny_resource_group(&mut self, sub: &str, rg: &str) {
        self.denied_resource_groups
            .insert(format!("/subscriptions/{sub}/resourcegroups/{rg}").to_ascii_lowercase());
    }

    pub fn add_management_group(&mut self, mg: &str) {
        self.management_groups.insert(mg.to_ascii_lowercase());
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/{arm_type-with-names}`.
    pub fn resource_id(sub: &str, rg: &str, namespace: &str, path: &str) -> String {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{path}")
    }

    /// The `alternativeNames` Graph shows for a resource's identity: lower-case `resourcegroups`
    /// as in the captured responses.
    pub fn alternative_names(resource_id: &str, explicit: bool) -> Vec<String> {
        let graph_form = resource_id.replace("/resourceGroups/", "/resourcegroups/");
        vec![
            format!("isExplicit={}", if explicit { "True" } else { "False" }),
            graph_form,
        ]
    }

    fn arm_type_of(id: &str) -> String {
        // Namespace + types of the last provider block.
        let segs: Vec<&str> = id.split('/').collect();
        let p = segs
            .iter()
            .rposition(|s| s.eq_ignore_ascii_case("providers"))
            .expect("resource ids have a provider");
        let ns = segs[p + 1];
        let types: Vec<&str> = segs[p + 2..].iter().step_by(2).copied().collect();
        format!("{ns}/{}", types.join("/"))
    }

    fn ensure_container(&mut self, id: &str) {
        let segs: Vec<&str> = id.split('/').collect();
        if segs.len() > 4
            && segs[1].eq_ignore_ascii_case("subscriptions")
            && segs[3].eq_ignore_ascii_case("resourceGroups")
        {
            let (sub, rg) = (segs[2].to_owned(), segs[4].to_owned());
            self.add_resource_group(&sub, &rg);
        }
        if segs.len() > 4
            && segs[1] == "providers"
            && segs[2].eq_ignore_ascii_case("Microsoft.Management")
        {
            let mg = segs[4].to_owned();
            self.add_management_group(&mg);
        }
    }

    /// Adds a resource with a system-assigned identity and its service principal; returns the
    /// principal's object id.
    pub fn add_system_assigned(&mut self, id: &str) -> String {
        self.ensure_container(id);
        let principal = self.guid();
        let app = self.guid();
        let location = ["westeurope", "eastus", "swedencentral"]
            [usize::try_from(self.rng.below(3)).unwrap_or(0)];
        self.resources.insert(
            id.to_ascii_lowercase(),
            SimResource {
                id: id.to_owned(),
                arm_type: Self::arm_type_of(id),
                location: location.to_owned(),
                system_principal: Some(principal.clone()),
                uami_principal: None,
                uami_client_id: None,
                kind: None,
                identity_since: None,
            },
        );
        let name = id.rsplit('/').next().unwrap_or("").to_owned();
        self.principals.push(SimPrincipal {
            id: principal.clone(),
            app_id: app,
            display_name: name,
            sp_type: "ManagedIdentity".into(),
            alternative_names: Some(Self::alternative_names(id, false)),
        });
        principal
    }

    /// Adds a user-assigned identity resource and its service principal; returns the object id.
    pub fn add_user_assigned(&mut self, sub: &str, rg: &str, name: &str) -> String {
        let id = Self::resource_id(
            sub,
            rg,
            "Microsoft.ManagedIdentity",
            &format!("userAssignedIdentities/{name}"),
        );
        self.ensure_container(&id);
        let principal = self.guid();
        let client = self.guid();
        self.resources.insert(
            id.to_ascii_lowercase(),
            SimResource {
                id: id.clone(),
                arm_type: "Microsoft.ManagedIdentity/userAssignedIdentities".into(),
                location: "westeurope".into(),
                system_principal: None,
                uami_principal: Some(principal.clone()),
                uami_client_id: Some(client.clone()),
                kind: None,
                identity_since: None,
            },
        );
        // UAMI principalId = SP id, clientId = SP appId, name = displayName (docs/azure-behaviour.md §1).
        self.principals.push(SimPrincipal {
            id: principal.clone(),
            app_id: client,
            display_name: name.to_owned(),
            sp_type: "ManagedIdentity".into(),
            alternative_names: Some(Self::alternative_names(&id, true)),
        });
        principal
    }

    pub fn add_principal(
        &mut self,
        sp_type: &str,
        name: &str,
        alternative_names: Option<Vec<String>>,
    ) -> String {
        let id = self.guid();
        let app = self.guid();
        self.principals.push(SimPrincipal {
            id: id.clone(),
            app_id: app,
            display_name: name.to_owned(),
            sp_type: sp_type.to_owned(),
            alternative_names,
        });
        id
    }

    pub fn delete_resource(&mut self, id: &str) {
        self.resources.remove(&id.to_ascii_lowercase());
    }

    /// Deletes and recreates a resource with the same name: it gets a new principal, the old
    /// service principal lingers (MicrosoftDocs/azure-docs#82404).
    pub fn recreate_resource(&mut self, id: &str) -> String {
        let new = self.guid();
        if let Some(r) = self.resources.get_mut(&id.to_ascii_lowercase()) {
            if r.uami_principal.is_some() {
                r.uami_principal = Some(new.clone());
            } else {
                r.system_principal = Some(new.clone());
            }
        }
        new
    }

    pub fn disable_system_identity(&mut self, id: &str) {
        if let Some(r) = self.resources.get_mut(&id.to_ascii_lowercase()) {
            r.system_principal = None;
        }
    }

    pub fn hide_from_resource_graph(&mut self, id: &str) {
        self.arg_lag.insert(id.to_ascii_lowercase());
    }

    /// The newest non-preview api-version the providers API lists for `Namespace/type` (what Resource
    /// Graph reads resources with, ARG overview), or the newest of any kind when none is stable.
    pub fn newest_stable_version(&self, full_type: &str) -> Option<String> {
        let (ns, t) = full_type.split_once('/')?;
        let versions = self
            .providers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(ns))?
            .1
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(t))?
            .1
            .clone();
        let stable = versions
            .iter()
            .filter(|v| !v.to_ascii_lowercase().contains("preview"))
            .max()
            .cloned();
        stable.or_else(|| versions.iter().max().cloned())
    }

    /// Lists `type_path` under `namespace` in the providers API with these api-versions (adding the
    /// namespace or type if needed, replacing the versions otherwise).
    pub fn register_type(&mut self, namespace: &str, type_path: &str, versions: &[&str]) {
        let types = self.providers.entry(namespace.to_owned()).or_default();
        let versions: Vec<String> = versions.iter().map(|v| (*v).to_owned()).collect();
        match types
            .iter_mut()
            .find(|(t, _)| t.eq_ignore_ascii_case(type_path))
        {
            Some((_, v)) => *v = versions,
            None => types.push((type_path.to_owned(), versions)),
        }
    }

    /// The resource's type gained `identity` in `api_version`: older versions answer without it (see
    /// [`SimResource::identity_since`]).
    pub fn set_identity_since(&mut self, id: &str, api_version: &str) {
        if let Some(r) = self.resources.get_mut(&id.to_ascii_lowercase()) {
            r.identity_since = Some(api_version.to_owned());
        }
    }

    /// Adds a resource with a system-assigned identity whose service principal's `alternativeNames`
    /// spell the resource id in the `odd` way: the resource exists and carries the principal, but the id
    /// Graph shows is not a well-formed ARM id. Returns the principal's object id.
    pub fn add_with_odd_alternative_name(&mut self, id: &str, odd: OddId) -> String {
        let principal = self.add_system_assigned(id);
        if let Some(p) = self.principals.iter_mut().rev().find(|p| p.id == principal)
            && let Some(names) = p.alternative_names.as_mut()
            && let Some(name) = names.get_mut(1)
        {
            *name = odd.apply(name);
        }
        principal
    }

    /// Removes a service principal from the directory (what support does for an orphan).
    pub fn remove_principal(&mut self, object_id: &str) {
        self.principals
            .retain(|p| !p.id.eq_ignore_ascii_case(object_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_older_than_the_identity_answer_without_it() {
        let mut w = World::new(SIM_TENANT_ID, 1);
        let sub = w.add_subscription("s", SubAccess::Reader);
        w.register_type(
            "Microsoft.ServiceBus",
            "namespaces",
            &["2017-04-01", "2018-01-01-preview"],
        );
        let id = World::resource_id(&sub, "rg", "Microsoft.ServiceBus", "namespaces/ns1");
        let p = w.add_system_assigned(&id);
        w.set_identity_since(&id, "2018-01-01-preview");
        let r = &w.resources[&id.to_ascii_lowercase()];
        let stable = w.newest_stable_version("Microsoft.ServiceBus/namespaces");
        assert_eq!(stable.as_deref(), Some("2017-04-01"));
        assert!(
            r.body_at(SIM_TENANT_ID, stable.as_deref())
                .get("identity")
                .is_none()
        );
        assert!(r.arg_row(SIM_TENANT_ID, stable.as_deref())["identity"].is_null());
        assert_eq!(
            r.body_at(SIM_TENANT_ID, Some("2018-01-01-preview"))["identity"]["principalId"],
            json!(p)
        );
        assert_eq!(r.body(SIM_TENANT_ID)["identity"]["principalId"], json!(p));
    }

    #[test]
    fn guids_look_like_guids() {
        let g = Rng::new(1).guid();
        assert_eq!(g.len(), 36);
        assert_eq!(g.matches('-').count(), 4);
    }
}
