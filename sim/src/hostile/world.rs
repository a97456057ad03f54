//! A tenant whose healthy identities sit behind every kind of hostile answer ([`HostileWorld`]).

use crate::model::{OddId, SIM_TENANT_ID, SubAccess, World};
use crate::{Api, Fault, FaultRule};

/// A healthy identity kept from the truth by a hostile answer.
#[derive(Debug, Clone)]
pub struct Behind {
    /// Service principal object id.
    pub principal: String,
    pub resource_id: String,
    pub fault: Fault,
}

/// A tenant where healthy identities sit behind every kind of hostile ARM answer, with odd
/// `alternativeNames`, and with a type whose stable api-version predates identity; plus genuine orphans
/// that must still be found.
///
/// The hostile answers are [`FaultRule`]s (one per resource, matched by its unique name, for good) that
/// the test installs with [`crate::SimHandle::add_faults`], not behaviours of the world: they are the
/// network between the client and ARM, which a test can take away ([`crate::SimHandle::clear_faults`])
/// to show the next scan completes on the same world. The odd ids and the late identity are properties
/// of the data and stay. Resources behind hostile answers are hidden from Resource Graph, so only ARM
/// can speak for them.
#[derive(Debug, Clone)]
pub struct HostileWorld {
    pub world: World,
    /// Install these to put [`HostileWorld::behind`] behind their hostile answers.
    pub rules: Vec<FaultRule>,
    pub behind: Vec<Behind>,
    /// Healthy identities whose `alternativeNames` spell their resource id oddly.
    pub odd: Vec<(String, OddId)>,
    /// A healthy identity whose resource type shows `identity` only in a preview api-version.
    pub preview_identity: String,
    /// Healthy identities with nothing odd about them.
    pub plain: Vec<String>,
    /// Genuine orphans: (object id, the reason a correct client gives).
    pub orphans: Vec<(String, &'static str)>,
}

impl World {
    /// See [`HostileWorld`].
    pub fn hostile(seed: u64) -> HostileWorld {
        HostileWorld::build(seed)
    }
}

impl HostileWorld {
    pub fn build(seed: u64) -> Self {
        let mut w = World::new(SIM_TENANT_ID, seed);
        let sub = w.add_subscription("hostile", SubAccess::Reader);
        register_types(&mut w);
        let (rules, behind) = behind_hostile_answers(&mut w, &sub);
        let odd = OddId::ALL
            .iter()
            .map(|&o| {
                let id = rid(
                    &sub,
                    "rg-odd",
                    "Microsoft.Compute",
                    &format!("virtualMachines/odd-{}", o.name().replace('_', "-")),
                );
                (w.add_with_odd_alternative_name(&id, o), o)
            })
            .collect();
        let sb = rid(
            &sub,
            "rg-messaging",
            "Microsoft.ServiceBus",
            "namespaces/sb-late-identity",
        );
        let preview_identity = w.add_system_assigned(&sb);
        w.set_identity_since(&sb, "2018-01-01-preview");
        let plain = vec![
            w.add_system_assigned(&rid(
                &sub,
                "rg-plain",
                "Microsoft.Compute",
                "virtualMachines/fine",
            )),
            w.add_user_assigned(&sub, "rg-plain", "fine-identity"),
        ];
        let orphans = add_orphans(&mut w, &sub);
        Self {
            world: w,
            rules,
            behind,
            odd,
            preview_identity,
            plain,
            orphans,
        }
    }

    /// Every healthy identity: behind hostile answers, odd ids, the late identity, the plain ones.
    pub fn healthy(&self) -> Vec<String> {
        self.behind
            .iter()
            .map(|b| b.principal.clone())
            .chain(self.odd.iter().map(|(p, _)| p.clone()))
            .chain([self.preview_identity.clone()])
            .chain(self.plain.iter().cloned())
            .collect()
    }
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}/{p}`.
fn rid(sub: &str, rg: &str, ns: &str, p: &str) -> String {
    World::resource_id(sub, rg, ns, p)
}

/// The types the hostile world needs beyond the default providers.
fn register_types(w: &mut World) {
    // Compute lists VM extensions as a child type (azure-rest-api-specs compute
    // `VirtualMachineExtensions_List` at `.../virtualMachines/{vm}/extensions`), so an id ending in
    // `/extensions/..` leads a normalising client to a real collection.
    w.register_type(
        "Microsoft.Compute",
        "virtualMachines/extensions",
        &["2024-07-01", "2023-09-01"],
    );
    // Service Bus namespaces as the providers API listed them before 2021: the only stable version
    // (2017-04-01) has no `identity`; 2018-01-01-preview has it (see `SimResource::identity_since`).
    w.register_type(
        "Microsoft.ServiceBus",
        "namespaces",
        &["2017-04-01", "2018-01-01-preview"],
    );
}

/// A healthy identity behind each hostile answer about a resource, and the rule that puts it there.
fn behind_hostile_answers(w: &mut World, sub: &str) -> (Vec<FaultRule>, Vec<Behind>) {
    let mut rules = Vec::new();
    let mut behind = Vec::new();
    for (i, fault) in Fault::hostile_answers()
        .into_iter()
        .filter(|f| !matches!(f, Fault::ForeignNextLink(_)))
        .enumerate()
    {
        let slug = match &fault {
            Fault::ArmNotFound { code } => format!("404-{}", code.to_ascii_lowercase()),
            Fault::Redirect { status, .. } => format!("{}-{status}", fault.name()),
            f => f.name().to_owned(),
        }
        .replace('_', "-");
        let name = format!("hx{i:03}-{slug}");
        let id = rid(
            sub,
            "rg-hostile",
            "Microsoft.Compute",
            &format!("virtualMachines/{name}"),
        );
        let principal = w.add_system_assigned(&id);
        w.hide_from_resource_graph(&id);
        rules.push(FaultRule {
            api: Api::Arm,
            path_contains: Some(format!("/hx{i:03}-")),
            times: None,
            fault: fault.clone(),
        });
        behind.push(Behind {
            principal,
            resource_id: id,
            fault,
        });
    }
    (rules, behind)
}

/// Genuine orphans of every kind: (object id, the reason a correct client gives).
fn add_orphans(w: &mut World, sub: &str) -> Vec<(String, &'static str)> {
    let mut orphans = Vec::new();
    let gone = rid(sub, "rg-plain", "Microsoft.Compute", "virtualMachines/gone");
    orphans.push((w.add_system_assigned(&gone), "resource_not_found"));
    w.delete_resource(&gone);
    let recreated = rid(sub, "rg-plain", "Microsoft.Web", "sites/recreated");
    orphans.push((w.add_system_assigned(&recreated), "principal_mismatch"));
    w.recreate_resource(&recreated);
    let switched_off = rid(
        sub,
        "rg-plain",
        "Microsoft.Compute",
        "virtualMachines/identity-off",
    );
    orphans.push((w.add_system_assigned(&switched_off), "principal_mismatch"));
    w.disable_system_identity(&switched_off);
    // Recreated with a new identity, of a type whose stable version does not show identity: only
    // the preview version proves the mismatch.
    let sb_recreated = rid(
        sub,
        "rg-messaging",
        "Microsoft.ServiceBus",
        "namespaces/sb-recreated",
    );
    orphans.push((w.add_system_assigned(&sb_recreated), "principal_mismatch"));
    w.set_identity_since(&sb_recreated, "2018-01-01-preview");
    w.recreate_resource(&sb_recreated);
    orphans.push((
        w.add_system_assigned(&rid(
            sub,
            "rg-decommissioned",
            "Microsoft.Compute",
            "virtualMachines/old",
        )),
        "resource_group_not_found",
    ));
    w.delete_resource_group(sub, "rg-decommissioned");
    let uami_gone = w.add_user_assigned(sub, "rg-plain", "retired-identity");
    w.delete_resource(&rid(
        sub,
        "rg-plain",
        "Microsoft.ManagedIdentity",
        "userAssignedIdentities/retired-identity",
    ));
    orphans.push((uami_gone, "resource_not_found"));
    orphans
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_ids_are_what_they_say() {
        let id =
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm";
        let got: Vec<String> = OddId::ALL.iter().map(|o| o.apply(id)).collect();
        assert_eq!(
            got,
            [
                "/subscriptions/s/resourcegroups/rg/./providers/Microsoft.Compute/virtualMachines/vm",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm/extensions/..",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/elsewhere/../vm",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines//vm",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm/",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines%2Fvm",
                "/subscriptions/s/resourcegroups/rg/providers%2fMicrosoft.Compute/virtualMachines/vm",
                "/subscriptions/s/resourcegroups/rg%5Cproviders/Microsoft.Compute/virtualMachines/vm",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm?api-version=2024-07-01",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm#identity",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm ",
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm\t\n",
            ]
        );
    }

    #[test]
    fn the_hostile_world_has_one_rule_per_identity_behind_and_unique_names() {
        let h = World::hostile(3);
        assert_eq!(h.rules.len(), h.behind.len());
        // Every hostile answer but the paging links (those are not about a resource).
        assert_eq!(h.behind.len(), Fault::hostile_answers().len() - 2);
        for (r, b) in h.rules.iter().zip(&h.behind) {
            let needle = r.path_contains.as_deref().expect("a path");
            let matching = h
                .world
                .resources
                .keys()
                .filter(|k| k.contains(needle))
                .count();
            assert_eq!(matching, 1, "{needle}");
            assert!(b.resource_id.to_ascii_lowercase().contains(needle));
            assert!(
                h.world
                    .arg_lag
                    .contains(&b.resource_id.to_ascii_lowercase())
            );
        }
        let healthy = h.healthy();
        for (o, _) in &h.orphans {
            assert!(!healthy.contains(o));
        }
        assert_eq!(h.odd.len(), OddId::ALL.len());
    }

    #[test]
    fn the_stable_version_of_a_late_identity_type_hides_it_and_the_preview_shows_it() {
        let h = World::hostile(1);
        let r = h
            .world
            .resources
            .values()
            .find(|r| r.id.ends_with("sb-late-identity"))
            .expect("namespace");
        assert_eq!(
            h.world.newest_stable_version(&r.arm_type).as_deref(),
            Some("2017-04-01")
        );
        assert!(r.body_at("t", Some("2017-04-01")).get("identity").is_none());
        assert_eq!(
            r.body_at("t", Some("2018-01-01-preview"))["identity"]["principalId"],
            json!(h.preview_identity)
        );
        assert!(r.arg_row("t", Some("2017-04-01"))["identity"].is_null());
    }
}
