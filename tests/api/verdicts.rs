//! Every verdict the judge can give, reached through the whole pipeline against the simulator.

use crate::helpers::*;
use miaudit::domain::{EvidenceSource, ObjectId};
use miaudit_sim::Api;
use miaudit_sim::SimConfig;
use miaudit_sim::model::{SubAccess, World};

#[tokio::test]
async fn healthy_system_and_user_assigned_identities_across_resource_types() {
    let (mut w, sub) = world();
    let vm = w.add_system_assigned(&rid(
        &sub,
        "rg1",
        "Microsoft.Compute",
        "virtualMachines/vm1",
    ));
    let site = w.add_system_assigned(&rid(&sub, "rg1", "Microsoft.Web", "sites/app1"));
    let slot = w.add_system_assigned(&rid(
        &sub,
        "rg1",
        "Microsoft.Web",
        "sites/app1/slots/staging",
    ));
    let st = w.add_system_assigned(&rid(
        &sub,
        "rg2",
        "Microsoft.Storage",
        "storageAccounts/st1",
    ));
    let uami = w.add_user_assigned(&sub, "rg2", "id-app");
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    for id in [&vm, &site, &slot, &st, &uami] {
        assert_eq!(outcome(&r, id), ("healthy", "resource_present"));
        // Resource Graph answered in bulk: no ARM GET was needed.
        assert_eq!(
            finding(&r, id).evidence.source,
            EvidenceSource::ResourceGraph
        );
    }
    assert_eq!(finding(&r, &uami).identity_type.as_str(), "user_assigned");
    assert_eq!(r.summary.healthy, 5);
    assert_eq!(env.sim.requests(Api::Arm), 1, "only GET /subscriptions");
}

#[tokio::test]
async fn deleted_resource_and_deleted_resource_group_are_orphans_with_evidence() {
    let (mut w, sub) = world();
    let vm_id = rid(&sub, "rg1", "Microsoft.Compute", "virtualMachines/gone");
    let vm = w.add_system_assigned(&vm_id);
    w.delete_resource(&vm_id);
    let rg_vm = w.add_system_assigned(&rid(
        &sub,
        "rg-old",
        "Microsoft.Compute",
        "virtualMachines/old",
    ));
    w.delete_resource_group(&sub, "rg-old");
    let uami_id = rid(
        &sub,
        "rg2",
        "Microsoft.ManagedIdentity",
        "userAssignedIdentities/gone-id",
    );
    let uami = w.add_user_assigned(&sub, "rg2", "gone-id");
    w.delete_resource(&uami_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert!(r.complete);
    assert_eq!(outcome(&r, &vm), ("orphaned", "resource_not_found"));
    assert_eq!(outcome(&r, &uami), ("orphaned", "resource_not_found"));
    assert_eq!(
        outcome(&r, &rg_vm),
        ("orphaned", "resource_group_not_found")
    );
    let ev = &finding(&r, &vm).evidence;
    assert_eq!(ev.source, EvidenceSource::Arm);
    assert_eq!(ev.status, Some(404));
    assert_eq!(ev.code.as_deref(), Some("ResourceNotFound"));
    assert!(
        ev.request_id.as_deref().is_some_and(|s| s.len() == 36),
        "{ev:?}"
    );
    assert!(ev.correlation_request_id.is_some());
    assert!(ev.checked_at.is_some());
}

#[tokio::test]
async fn recreated_resource_and_switched_off_identity_are_principal_mismatch() {
    let (mut w, sub) = world();
    let a_id = rid(&sub, "rg1", "Microsoft.Web", "sites/recreated");
    let a = w.add_system_assigned(&a_id);
    w.recreate_resource(&a_id);
    let b_id = rid(
        &sub,
        "rg1",
        "Microsoft.Compute",
        "virtualMachines/no-identity",
    );
    let b = w.add_system_assigned(&b_id);
    w.disable_system_identity(&b_id);
    let c = w.add_user_assigned(&sub, "rg1", "recreated-id");
    w.recreate_resource(&rid(
        &sub,
        "rg1",
        "Microsoft.ManagedIdentity",
        "userAssignedIdentities/recreated-id",
    ));
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    for id in [&a, &b, &c] {
        assert_eq!(outcome(&r, id), ("orphaned", "principal_mismatch"));
        assert_eq!(finding(&r, id).evidence.status, Some(200));
    }
}

#[tokio::test]
async fn casing_differences_between_graph_and_arm_do_not_matter() {
    let (mut w, sub) = world();
    let id = rid(&sub, "MyRG", "Microsoft.Compute", "virtualMachines/MyVM");
    let p = w.add_system_assigned(&id);
    // Graph spells the id in upper case, principal id in upper case too.
    let sp = w.principals.iter_mut().find(|x| x.id == p).expect("sp");
    sp.alternative_names = Some(vec![
        "isExplicit=False".into(),
        id.to_uppercase()
            .replace("/SUBSCRIPTIONS/", "/subscriptions/"),
    ]);
    sp.id = sp.id.to_uppercase();
    let upper = sp.id.clone();
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert_eq!(outcome(&r, &upper), ("healthy", "resource_present"));
}

#[tokio::test]
async fn policy_assignments_at_subscription_and_management_group_scope() {
    let (mut w, sub) = world();
    let sub_pa = w.add_system_assigned(&format!(
        "/subscriptions/{sub}/providers/Microsoft.Authorization/policyAssignments/deploy-diag"
    ));
    let sub_pa_gone_id =
        format!("/subscriptions/{sub}/providers/Microsoft.Authorization/policyAssignments/retired");
    let sub_pa_gone = w.add_system_assigned(&sub_pa_gone_id);
    w.delete_resource(&sub_pa_gone_id);
    let mg_pa = w.add_system_assigned("/providers/Microsoft.Management/managementGroups/root-mg/providers/Microsoft.Authorization/policyAssignments/enforce-tags");
    let mg_gone_id = "/providers/Microsoft.Management/managementGroups/root-mg/providers/Microsoft.Authorization/policyAssignments/old";
    let mg_gone = w.add_system_assigned(mg_gone_id);
    w.delete_resource(mg_gone_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    assert_eq!(outcome(&r, &sub_pa), ("healthy", "resource_present"));
    assert_eq!(
        finding(&r, &sub_pa).evidence.source,
        EvidenceSource::ResourceGraph
    );
    assert_eq!(
        outcome(&r, &sub_pa_gone),
        ("orphaned", "resource_not_found")
    );
    assert_eq!(outcome(&r, &mg_pa), ("healthy", "resource_present"));
    assert_eq!(
        finding(&r, &mg_pa).evidence.source,
        EvidenceSource::Arm,
        "management-group scope goes straight to ARM"
    );
    assert_eq!(outcome(&r, &mg_gone), ("orphaned", "resource_not_found"));
    assert_eq!(
        finding(&r, &mg_gone).evidence.code.as_deref(),
        Some("PolicyAssignmentNotFound")
    );
}

#[tokio::test]
async fn subscriptions_we_cannot_see_are_unknown_unless_proven_transferred() {
    let (mut w, _) = world();
    let hidden = w.add_subscription("hidden", SubAccess::NoAccess);
    let h = w.add_system_assigned(&rid(
        &hidden,
        "rg",
        "Microsoft.Compute",
        "virtualMachines/h",
    ));
    let deleted = w.add_subscription("cancelled", SubAccess::Deleted);
    let d = w.add_system_assigned(&rid(
        &deleted,
        "rg",
        "Microsoft.Compute",
        "virtualMachines/d",
    ));
    let other = "bbbbbbbb-1111-2222-3333-444444444444";
    let moved = w.add_subscription(
        "moved",
        SubAccess::Transferred {
            to_tenant: other.into(),
        },
    );
    let m = w.add_system_assigned(&rid(&moved, "rg", "Microsoft.Web", "sites/m"));
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert!(
        r.complete,
        "answers, even negative ones, complete a scan: {:?}",
        r.tenants
    );
    assert_eq!(outcome(&r, &h), ("unknown", "subscription_not_accessible"));
    assert_eq!(outcome(&r, &d), ("unknown", "subscription_not_accessible"));
    assert_eq!(outcome(&r, &m), ("orphaned", "subscription_transferred"));
    assert!(finding(&r, &m).detail.contains(other));
    assert_eq!(finding(&r, &m).evidence.status, Some(401));
}

#[tokio::test]
async fn forbidden_resource_group_is_access_denied_never_orphaned() {
    let (mut w, sub) = world();
    let p = w.add_system_assigned(&rid(
        &sub,
        "rg-locked",
        "Microsoft.Compute",
        "virtualMachines/locked",
    ));
    w.deny_resource_group(&sub, "rg-locked");
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert_eq!(outcome(&r, &p), ("unknown", "access_denied"));
    assert_eq!(finding(&r, &p).evidence.status, Some(403));
    assert!(r.complete);
}

#[tokio::test]
async fn a_resource_resource_graph_has_not_indexed_yet_is_confirmed_healthy_by_arm() {
    let (mut w, sub) = world();
    let id = rid(
        &sub,
        "rg1",
        "Microsoft.Compute",
        "virtualMachines/brand-new",
    );
    let p = w.add_system_assigned(&id);
    w.hide_from_resource_graph(&id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert_eq!(outcome(&r, &p), ("healthy", "resource_present"));
    assert_eq!(finding(&r, &p).evidence.source, EvidenceSource::Arm);
}

#[tokio::test]
async fn malformed_alternative_names_are_unknown_and_other_principal_types_ignored() {
    let (mut w, sub) = world();
    let ok = w.add_system_assigned(&rid(&sub, "rg1", "Microsoft.Compute", "virtualMachines/ok"));
    let bad1 = w.add_principal(
        "ManagedIdentity",
        "weird",
        Some(vec![
            "isExplicit=False".into(),
            "/subscriptions//nonsense".into(),
        ]),
    );
    let bad2 = w.add_principal("ManagedIdentity", "empty", None);
    let bad3 = w.add_principal(
        "ManagedIdentity",
        "flag",
        Some(vec![
            "isExplicit=Perhaps".into(),
            rid(&sub, "rg1", "Microsoft.Compute", "virtualMachines/ok"),
        ]),
    );
    let app = w.add_principal("Application", "portal", None);
    let legacy = w.add_principal(
        "Legacy",
        "legacy",
        Some(vec![rid(
            &sub,
            "rg1",
            "Microsoft.Compute",
            "virtualMachines/gone",
        )]),
    );
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert_eq!(outcome(&r, &ok), ("healthy", "resource_present"));
    for id in [&bad1, &bad2, &bad3] {
        assert_eq!(
            outcome(&r, id),
            ("unknown", "unrecognized_alternative_names")
        );
    }
    assert!(
        r.findings
            .iter()
            .all(|f| f.object_id != ObjectId::new(&app) && f.object_id != ObjectId::new(&legacy))
    );
    assert_eq!(r.summary.total, 4);
    assert!(
        r.complete,
        "unparseable names are reported, not a failed check"
    );
}

#[tokio::test]
async fn api_versions_come_from_the_providers_api_or_the_refusal_message() {
    let (mut w, sub) = world();
    let id = rid(&sub, "rg1", "Microsoft.Compute", "virtualMachines/v");
    let p = w.add_system_assigned(&id);
    w.hide_from_resource_graph(&id);
    // The providers API lists 2024-07-01 as newest stable, but the RP refuses it.
    w.refused_versions.insert("2024-07-01".into());
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    assert_eq!(outcome(&r, &p), ("healthy", "resource_present"));
    // subscriptions + providers + refused GET + accepted GET
    assert_eq!(env.sim.requests(Api::Arm), 4);
}

#[tokio::test]
async fn the_generated_demo_tenant_gives_every_kind_of_verdict() {
    let env = TestEnv::start(World::generate(42, 1000), SimConfig::default()).await;
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    let reasons: std::collections::BTreeSet<&str> =
        r.findings.iter().map(|f| f.reason.as_str()).collect();
    for reason in [
        "resource_present",
        "resource_not_found",
        "resource_group_not_found",
        "principal_mismatch",
        "subscription_transferred",
        "access_denied",
        "subscription_not_accessible",
        "unrecognized_alternative_names",
    ] {
        assert!(reasons.contains(reason), "{reason} missing: {reasons:?}");
    }
    assert!(
        r.summary.orphaned >= 5 && r.summary.orphaned <= 15,
        "{:?}",
        r.summary
    );
    // One token per audience, cached for the whole scan.
    assert_eq!(env.sim.requests(Api::Token), 2);
}

#[tokio::test]
async fn without_the_providers_api_the_version_is_learnt_from_a_refusal_never_from_a_probe_answer()
{
    use miaudit_sim::{Fault, FaultRule};
    let (mut w, sub) = world();
    let live_id = rid(&sub, "rg1", "Microsoft.Compute", "virtualMachines/live");
    let live = w.add_system_assigned(&live_id);
    w.hide_from_resource_graph(&live_id);
    let gone_id = rid(&sub, "rg1", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let env = TestEnv::start(w, SimConfig::default()).await;
    // Both providers endpoints (subscription and tenant level) fail for good.
    env.sim.add_fault(FaultRule {
        api: Api::Arm,
        path_contains: Some("/providers/Microsoft.Compute?".into()),
        times: None,
        fault: Fault::Status(500),
    });
    let r = env.scan().await;
    assert!(r.complete, "{:?}", r.tenants);
    assert_eq!(outcome(&r, &live), ("healthy", "resource_present"));
    assert_eq!(outcome(&r, &gone), ("orphaned", "resource_not_found"));
}
