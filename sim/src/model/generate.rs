//! The seeded tenants of [`World::generate`] and the demo's churn ([`World::churn`]).

use super::{Rng, SIM_TENANT_ID, SimResource, SubAccess, World};

impl World {
    /// A realistic seeded tenant of about `identities` managed identities over several subscriptions,
    /// with ~0.5 % orphans of every kind and every edge case the scan must handle.
    pub fn generate(seed: u64, identities: usize) -> Self {
        Self::generate_with_orphans(seed, identities, (identities / 200).max(4))
    }

    /// [`World::generate`] with a chosen number of orphans made by deletion, recreation or a switched-off
    /// identity (the fixed edge cases come on top).
    pub fn generate_with_orphans(seed: u64, identities: usize, orphans: usize) -> Self {
        let mut w = Self::new(SIM_TENANT_ID, seed);
        let n_subs = (identities / 400).clamp(3, 500);
        let subs: Vec<String> = (0..n_subs)
            .map(|i| w.add_subscription(&format!("sub-{i:03}"), SubAccess::Reader))
            .collect();
        let mg = "contoso-root";
        w.add_management_group(mg);
        let ids = w.add_identities(&subs, identities.saturating_sub(4));
        w.add_policy_assignments(&subs[0], mg);
        w.make_orphans(&ids, orphans);
        w.add_edge_cases(&subs, &ids);
        w.add_unreadable_subscriptions();
        w.add_other_principals();
        w
    }

    /// `count` identities of weighted kinds, in random subscriptions and resource groups; returns
    /// (resource id, principal) of each.
    fn add_identities(&mut self, subs: &[String], count: usize) -> Vec<(String, String)> {
        let mut ids: Vec<(String, String)> = Vec::new();
        let mut n = 0u64;
        while ids.len() < count {
            n += 1;
            let sub = subs[usize::try_from(self.rng.below(subs.len() as u64)).unwrap_or(0)].clone();
            let rg = format!("rg-{}", self.rng.below(20));
            let (ns, t) = self.pick_kind();
            ids.push(self.add_identity(n, &sub, &rg, ns, t));
        }
        ids
    }

    /// A resource kind, drawn by weight.
    fn pick_kind(&mut self) -> (&'static str, &'static str) {
        let kinds: [(&str, &str, u64); 9] = [
            ("Microsoft.Compute", "virtualMachines", 30),
            ("Microsoft.Web", "sites", 20),
            ("Microsoft.Web", "sites/slots", 6),
            ("Microsoft.Storage", "storageAccounts", 10),
            ("Microsoft.Sql", "servers", 6),
            ("Microsoft.Logic", "workflows", 6),
            ("Microsoft.DataFactory", "factories", 4),
            ("Microsoft.HybridCompute", "machines", 6),
            ("Microsoft.ManagedIdentity", "userAssignedIdentities", 12),
        ];
        let total_weight: u64 = kinds.iter().map(|k| k.2).sum();
        let mut pick = self.rng.below(total_weight);
        let mut kind = kinds[0];
        for k in kinds {
            if pick < k.2 {
                kind = k;
                break;
            }
            pick -= k.2;
        }
        (kind.0, kind.1)
    }

    /// The `n`th generated identity, of type `ns/t`: returns (resource id, principal).
    fn add_identity(&mut self, n: u64, sub: &str, rg: &str, ns: &str, t: &str) -> (String, String) {
        if t == "userAssignedIdentities" {
            let p = self.add_user_assigned(sub, rg, &format!("id-{n}"));
            let id = Self::resource_id(sub, rg, ns, &format!("{t}/id-{n}"));
            return (id, p);
        }
        let path = if t == "sites/slots" {
            format!("sites/app-{n}/slots/staging")
        } else {
            format!(
                "{t}/{}-{n}",
                t.split('/').next().unwrap_or("r").to_ascii_lowercase()
            )
        };
        let id = Self::resource_id(sub, rg, ns, &path);
        if t == "sites/slots" {
            // The parent site exists (without identity of its own here).
            let parent = Self::resource_id(sub, rg, ns, &format!("sites/app-{n}"));
            self.resources.insert(
                parent.to_ascii_lowercase(),
                SimResource {
                    id: parent.clone(),
                    arm_type: "Microsoft.Web/sites".into(),
                    location: "westeurope".into(),
                    system_principal: None,
                    uami_principal: None,
                    uami_client_id: None,
                    kind: None,
                    identity_since: None,
                },
            );
        }
        let p = self.add_system_assigned(&id);
        // Every third web site is a function app.
        if t == "sites"
            && n.is_multiple_of(3)
            && let Some(r) = self.resources.get_mut(&id.to_ascii_lowercase())
        {
            r.kind = Some("functionapp".into());
        }
        (id, p)
    }

    /// Policy assignments with identities: subscription and management-group scope, and one whose
    /// assignment is gone.
    fn add_policy_assignments(&mut self, sub: &str, mg: &str) {
        let pa_sub = format!(
            "/subscriptions/{sub}/providers/Microsoft.Authorization/policyAssignments/deploy-diagnostics"
        );
        self.add_system_assigned(&pa_sub);
        let pa_mg = format!(
            "/providers/Microsoft.Management/managementGroups/{mg}/providers/Microsoft.Authorization/policyAssignments/enforce-tags"
        );
        self.add_system_assigned(&pa_mg);
        let pa_mg_gone = format!(
            "/providers/Microsoft.Management/managementGroups/{mg}/providers/Microsoft.Authorization/policyAssignments/retired-initiative"
        );
        self.add_system_assigned(&pa_mg_gone);
        self.delete_resource(&pa_mg_gone);
    }

    /// Orphans spread over the kinds of orphan, each on a distinct resource.
    fn make_orphans(&mut self, ids: &[(String, String)], orphans: usize) {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        for i in (1..order.len()).rev() {
            let j = usize::try_from(self.rng.below(i as u64 + 1)).unwrap_or(0);
            order.swap(i, j);
        }
        for (i, idx) in order.into_iter().take(orphans.min(ids.len())).enumerate() {
            let (id, _) = ids[idx].clone();
            match i % 4 {
                0 | 1 => self.delete_resource(&id),
                2 => {
                    self.recreate_resource(&id);
                }
                _ => self.disable_system_identity(&id),
            }
        }
    }

    /// A deleted resource group, a resource Resource Graph lags behind on, an unreadable group.
    fn add_edge_cases(&mut self, subs: &[String], ids: &[(String, String)]) {
        let gone_sub = subs[1 % subs.len()].clone();
        self.add_system_assigned(&Self::resource_id(
            &gone_sub,
            "rg-decommissioned",
            "Microsoft.Compute",
            "virtualMachines/legacy-vm",
        ));
        self.delete_resource_group(&gone_sub, "rg-decommissioned");
        // Resource Graph lag: a brand-new resource ARM already has.
        if let Some((id, _)) = ids.get(ids.len() / 2).cloned() {
            self.hide_from_resource_graph(&id);
        }
        // A resource group the auditor cannot read.
        let locked = subs[2 % subs.len()].clone();
        self.add_system_assigned(&Self::resource_id(
            &locked,
            "rg-restricted",
            "Microsoft.Compute",
            "virtualMachines/secret-vm",
        ));
        self.deny_resource_group(&locked, "rg-restricted");
    }

    /// A subscription nobody gave us, and one transferred to another tenant.
    fn add_unreadable_subscriptions(&mut self) {
        let hidden = self.add_subscription("sub-hidden", SubAccess::NoAccess);
        self.add_system_assigned(&Self::resource_id(
            &hidden,
            "rg-x",
            "Microsoft.Storage",
            "storageAccounts/hiddenstore",
        ));
        let other_tenant = self.guid();
        let moved = self.add_subscription(
            "sub-moved",
            SubAccess::Transferred {
                to_tenant: other_tenant,
            },
        );
        self.add_system_assigned(&Self::resource_id(
            &moved,
            "rg-y",
            "Microsoft.Web",
            "sites/moved-app",
        ));
    }

    /// Principals that are not managed identities, and one with unreadable alternativeNames.
    fn add_other_principals(&mut self) {
        self.add_principal("Application", "contoso-portal", None);
        self.add_principal(
            "Legacy",
            "old-app",
            Some(vec!["https://old.contoso.com".into()]),
        );
        self.add_principal(
            "ManagedIdentity",
            "mystery",
            Some(vec!["isExplicit=False".into(), "not-a-resource-id".into()]),
        );
    }

    /// One round of the demo's churn: deletes two resources and recreates one (new orphans), brings one
    /// deleted resource back (a restoration), and has "support" remove up to two principals whose
    /// resource is gone (removals). Returns a line per event.
    pub fn churn(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        let with_identity: Vec<String> = self
            .resources
            .iter()
            .filter(|(_, r)| r.system_principal.is_some() || r.uami_principal.is_some())
            .filter(|(k, _)| k.starts_with("/subscriptions/"))
            .map(|(k, _)| k.clone())
            .collect();
        if with_identity.is_empty() {
            return events;
        }
        let pick = |rng: &mut Rng| {
            with_identity[usize::try_from(rng.below(with_identity.len() as u64)).unwrap_or(0)]
                .clone()
        };
        for _ in 0..2 {
            let k = pick(&mut self.rng);
            if let Some(r) = self.resources.remove(&k) {
                events.push(format!("deleted {}", r.id));
                self.graveyard.push(r);
            }
        }
        let k = pick(&mut self.rng);
        if let Some(id) = self.resources.get(&k).map(|r| r.id.clone()) {
            self.recreate_resource(&id);
            events.push(format!("recreated {id} with a new identity"));
        }
        if self.graveyard.len() > 3 {
            let r = self.graveyard.remove(0);
            events.push(format!("restored {}", r.id));
            self.resources.insert(r.key(), r);
        }
        // Support deletes lingering principals whose resource is gone.
        let gone: Vec<String> = self
            .principals
            .iter()
            .filter(|p| p.sp_type == "ManagedIdentity")
            .filter(|p| {
                p.alternative_names
                    .as_ref()
                    .and_then(|n| n.get(1))
                    .is_some_and(|id| {
                        id.starts_with("/subscriptions/")
                            && !self.resources.contains_key(&id.to_ascii_lowercase())
                    })
            })
            .filter(|p| {
                !self.graveyard.iter().any(|r| {
                    r.system_principal.as_deref() == Some(p.id.as_str())
                        || r.uami_principal.as_deref() == Some(p.id.as_str())
                })
            })
            .take(2)
            .map(|p| p.id.clone())
            .collect();
        for id in gone {
            self.remove_principal(&id);
            events.push(format!("support removed orphaned principal {id}"));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_repeatable_from_the_seed() {
        let a = World::generate(7, 500);
        let b = World::generate(7, 500);
        let c = World::generate(8, 500);
        let ids = |w: &World| {
            w.principals
                .iter()
                .map(|p| p.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a), ids(&c));
        let mi = a
            .principals
            .iter()
            .filter(|p| p.sp_type == "ManagedIdentity")
            .count();
        assert!((490..=520).contains(&mi), "{mi}");
    }

    #[test]
    fn churn_deletes_recreates_restores_and_removes() {
        let mut w = World::generate(5, 200);
        let mut all = Vec::new();
        for _ in 0..4 {
            all.extend(w.churn());
        }
        for what in ["deleted", "recreated", "restored", "support removed"] {
            assert!(all.iter().any(|e| e.starts_with(what)), "{what}: {all:?}");
        }
    }
}
