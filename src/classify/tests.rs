//! The judge's rules, case by case: every reason reachable, no orphan without proof.

use super::*;
use crate::domain::Evidence;

const OID: &str = "11111111-1111-1111-1111-111111111111";
const TENANT: &str = "aaaaaaaa-0000-0000-0000-000000000001";

fn identity(names: &[&str]) -> ManagedIdentity {
    ManagedIdentity::from_alternative_names(
        &TENANT.into(),
        OID.into(),
        "app".into(),
        "vm1".into(),
        names.iter().map(|s| (*s).to_owned()).collect(),
    )
}

fn vm() -> ManagedIdentity {
    identity(&[
        "isExplicit=False",
        "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
    ])
}

fn ev(source: EvidenceSource, answer: Answer) -> Evidence {
    Evidence {
        source,
        answer,
        subscription_visible: Some(true),
        ..Evidence::not_checked()
    }
}

/// An ARM error answer as ARM sends it: error body and `x-ms-request-id`.
fn arm_error(status: u16, code: &str) -> Evidence {
    Evidence {
        request_id: Some("6f8a2b1c-0000-0000-0000-000000000001".into()),
        ..ev(
            EvidenceSource::Arm,
            Answer::Error {
                status,
                code: Some(code.into()),
                message: Some("m".into()),
            },
        )
    }
}

fn present(principal_id: Option<&str>, latest_version: bool) -> Answer {
    Answer::Present {
        principal_id: principal_id.map(ObjectId::new),
        latest_version,
    }
}

/// ARM's answer with Resource Graph's row beside it.
fn arm_present(principal: Option<&str>, latest: bool, row: Option<Option<&str>>) -> Evidence {
    Evidence {
        resource_graph: row.map(|p| GraphRow {
            principal_id: p.map(ObjectId::new),
        }),
        ..ev(EvidenceSource::Arm, present(principal, latest))
    }
}

fn verdict(i: &ManagedIdentity, e: &Evidence) -> (Verdict, Reason) {
    let j = judge(i, e);
    (j.verdict, j.reason)
}

#[test]
fn present_with_same_principal_is_healthy_whatever_the_casing() {
    for source in [EvidenceSource::Arm, EvidenceSource::ResourceGraph] {
        let e = ev(source, present(Some(&OID.to_uppercase()), false));
        assert_eq!(
            verdict(&vm(), &e),
            (Verdict::Healthy, Reason::ResourcePresent)
        );
    }
}

#[test]
fn arm_naming_another_principal_is_principal_mismatch_with_any_api_version() {
    for latest in [false, true] {
        let e = arm_present(Some("22222222-2222-2222-2222-222222222222"), latest, None);
        assert_eq!(
            verdict(&vm(), &e),
            (Verdict::Orphaned, Reason::PrincipalMismatch)
        );
    }
}

#[test]
fn an_absent_identity_needs_the_newest_api_version_and_resource_graph_to_agree() {
    const OTHER: &str = "22222222-2222-2222-2222-222222222222";
    // Both witnesses: the newest api-version shows none, Resource Graph lists the resource without it.
    for row in [None, Some(OTHER)] {
        assert_eq!(
            verdict(&vm(), &arm_present(None, true, Some(row))),
            (Verdict::Orphaned, Reason::PrincipalMismatch),
            "{row:?}"
        );
    }
    // An older api-version may simply not report identities.
    for row in [None, Some(None), Some(Some(OTHER))] {
        assert_eq!(
            verdict(&vm(), &arm_present(None, false, row)),
            (Verdict::Unknown, Reason::IdentityUnconfirmed),
            "{row:?}"
        );
    }
    // No second witness, or one that contradicts ARM.
    for row in [None, Some(Some(OID))] {
        assert_eq!(
            verdict(&vm(), &arm_present(None, true, row)),
            (Verdict::Unknown, Reason::IdentityUnconfirmed),
            "{row:?}"
        );
    }
}

#[test]
fn resource_graph_mismatch_is_never_an_orphan() {
    let e = ev(EvidenceSource::ResourceGraph, present(None, true));
    assert_eq!(verdict(&vm(), &e).0, Verdict::Unknown);
}

#[test]
fn not_found_codes_about_the_resource_are_orphans() {
    for code in [
        "ResourceNotFound",
        "NotFound",
        "ParentResourceNotFound",
        "PolicyAssignmentNotFound",
        "resourcenotfound",
    ] {
        assert_eq!(
            verdict(&vm(), &arm_error(404, code)),
            (Verdict::Orphaned, Reason::ResourceNotFound),
            "{code}"
        );
    }
    assert_eq!(
        verdict(&vm(), &arm_error(404, "ResourceGroupNotFound")),
        (Verdict::Orphaned, Reason::ResourceGroupNotFound)
    );
}

#[test]
fn not_found_codes_not_about_the_resource_prove_nothing() {
    assert_eq!(
        verdict(&vm(), &arm_error(404, "SubscriptionNotFound")),
        (Verdict::Unknown, Reason::SubscriptionNotAccessible)
    );
    for code in [
        "InvalidResourceType",
        "InvalidResourceNamespace",
        "NoRegisteredProviderFound",
        "ManagementGroupNotFound",
        "TenantNotFound",
        "LocationNotFound",
        "ApiVersionNotFound",
        "PrincipalNotFound",
        "RoleAssignmentNotFound",
        "DeploymentNotFound",
        "WhateverNotFound",
        "",
    ] {
        assert_eq!(
            verdict(&vm(), &arm_error(404, code)),
            (Verdict::Unknown, Reason::CheckFailed),
            "{code}"
        );
    }
    let no_body = Evidence {
        request_id: Some("r".into()),
        ..ev(
            EvidenceSource::Arm,
            Answer::Error {
                status: 404,
                code: None,
                message: None,
            },
        )
    };
    assert_eq!(
        verdict(&vm(), &no_body),
        (Verdict::Unknown, Reason::CheckFailed)
    );
}

#[test]
fn a_404_without_arms_request_id_proves_nothing() {
    for code in ["ResourceNotFound", "ResourceGroupNotFound", "NotFound"] {
        for rid in [None, Some(""), Some("  ")] {
            let mut e = arm_error(404, code);
            e.request_id = rid.map(str::to_owned);
            assert_eq!(
                verdict(&vm(), &e),
                (Verdict::Unknown, Reason::CheckFailed),
                "{code} {rid:?}"
            );
        }
    }
}

#[test]
fn a_principal_resource_graph_shows_elsewhere_is_never_an_orphan() {
    for mut e in [
        arm_error(404, "ResourceNotFound"),
        arm_error(404, "ResourceGroupNotFound"),
        arm_present(Some("22222222-2222-2222-2222-222222222222"), true, None),
        arm_present(None, true, Some(None)),
    ] {
        e.carried_elsewhere = Some(
            "/subscriptions/s1/resourcegroups/rg2/providers/microsoft.compute/virtualmachines/vm1"
                .into(),
        );
        assert_eq!(
            verdict(&vm(), &e),
            (Verdict::Unknown, Reason::PrincipalInUseElsewhere)
        );
    }
    // Healthy and unknown verdicts are left as they are.
    let mut e = arm_error(403, "AuthorizationFailed");
    e.carried_elsewhere = Some("/x".into());
    assert_eq!(verdict(&vm(), &e), (Verdict::Unknown, Reason::AccessDenied));
}

#[test]
fn redirects_are_never_an_answer() {
    for status in [301, 302, 303, 307, 308] {
        assert_eq!(
            verdict(&vm(), &arm_error(status, "ResourceNotFound")),
            (Verdict::Unknown, Reason::CheckFailed),
            "{status}"
        );
    }
}

#[test]
fn forbidden_is_access_denied_never_orphaned() {
    assert_eq!(
        verdict(&vm(), &arm_error(403, "AuthorizationFailed")),
        (Verdict::Unknown, Reason::AccessDenied)
    );
}

#[test]
fn throttling_and_server_errors_are_check_failed() {
    for status in [400, 409, 429, 500, 502, 503, 504] {
        assert_eq!(
            verdict(&vm(), &arm_error(status, "Whatever")),
            (Verdict::Unknown, Reason::CheckFailed)
        );
    }
    let failed = ev(
        EvidenceSource::Arm,
        Answer::Failed {
            what: "timeout".into(),
        },
    );
    assert_eq!(
        verdict(&vm(), &failed),
        (Verdict::Unknown, Reason::CheckFailed)
    );
    assert_eq!(
        verdict(&vm(), &Evidence::not_checked()),
        (Verdict::Unknown, Reason::CheckFailed)
    );
}

fn wrong_tenant(named: &str) -> Evidence {
    let mut e = ev(
        EvidenceSource::Arm,
        Answer::Error {
            status: 401,
            code: Some("InvalidAuthenticationTokenTenant".into()),
            message: Some(format!(
                "The access token is from the wrong issuer 'https://sts.windows.net/{TENANT}/'. It must match the tenant 'https://sts.windows.net/{named}/' associated with this subscription. Please use the authority (URL) 'https://login.windows.net/{named}' to get the token."
            )),
        },
    );
    e.request_id = Some("6f8a2b1c-0000-0000-0000-000000000002".into());
    e
}

#[test]
fn wrong_tenant_naming_another_tenant_is_subscription_transferred() {
    let mut e = wrong_tenant("bbbbbbbb-0000-0000-0000-000000000002");
    e.subscription_visible = Some(false);
    assert_eq!(
        verdict(&vm(), &e),
        (Verdict::Orphaned, Reason::SubscriptionTransferred)
    );
    // Naming our own tenant proves nothing, nor does a claim about a subscription we do list.
    let mut own = wrong_tenant(TENANT);
    own.subscription_visible = Some(false);
    assert_eq!(verdict(&vm(), &own).0, Verdict::Unknown);
    for visible in [Some(true), None] {
        let mut listed = wrong_tenant("bbbbbbbb-0000-0000-0000-000000000002");
        listed.subscription_visible = visible;
        assert_eq!(verdict(&vm(), &listed).0, Verdict::Unknown, "{visible:?}");
    }
    // Without ARM's request id it is nobody's word.
    let mut anonymous = wrong_tenant("bbbbbbbb-0000-0000-0000-000000000002");
    anonymous.subscription_visible = Some(false);
    anonymous.request_id = None;
    assert_eq!(verdict(&vm(), &anonymous).0, Verdict::Unknown);
    let garbled = ev(
        EvidenceSource::Arm,
        Answer::Error {
            status: 401,
            code: Some("InvalidAuthenticationTokenTenant".into()),
            message: Some("wrong issuer".into()),
        },
    );
    assert_eq!(verdict(&vm(), &garbled).0, Verdict::Unknown);
}

#[test]
fn invisible_subscription_is_not_accessible_even_on_not_found() {
    for (status, code) in [
        (403, "AuthorizationFailed"),
        (404, "ResourceNotFound"),
        (404, "SubscriptionNotFound"),
    ] {
        let mut e = arm_error(status, code);
        e.subscription_visible = Some(false);
        assert_eq!(
            verdict(&vm(), &e),
            (Verdict::Unknown, Reason::SubscriptionNotAccessible)
        );
    }
}

#[test]
fn a_token_problem_in_an_invisible_subscription_is_a_failed_check() {
    let mut e = arm_error(401, "ExpiredAuthenticationToken");
    e.subscription_visible = Some(false);
    assert_eq!(verdict(&vm(), &e), (Verdict::Unknown, Reason::CheckFailed));
    let mut e = arm_error(400, "NoRegisteredProviderFound");
    e.subscription_visible = Some(false);
    assert_eq!(verdict(&vm(), &e), (Verdict::Unknown, Reason::CheckFailed));
}

#[test]
fn a_403_without_the_subscription_list_is_a_failed_check() {
    let mut e = arm_error(403, "AuthorizationFailed");
    e.subscription_visible = None;
    assert_eq!(verdict(&vm(), &e), (Verdict::Unknown, Reason::CheckFailed));
    // Proof of absence stays proof, whatever the list said.
    let mut e = arm_error(404, "ResourceNotFound");
    e.subscription_visible = None;
    assert_eq!(
        verdict(&vm(), &e),
        (Verdict::Orphaned, Reason::ResourceNotFound)
    );
}

#[test]
fn unparseable_alternative_names_are_unknown() {
    let i = identity(&["isExplicit=True", "garbage"]);
    assert_eq!(
        verdict(&i, &Evidence::not_checked()),
        (Verdict::Unknown, Reason::UnrecognizedAlternativeNames)
    );
}

#[test]
fn every_reason_is_reachable() {
    use std::collections::HashSet;
    let mut seen = HashSet::new();
    let mut transferred = wrong_tenant("bbbbbbbb-0000-0000-0000-000000000002");
    transferred.subscription_visible = Some(false);
    let cases = [
        ev(EvidenceSource::Arm, present(Some(OID), false)),
        arm_error(404, "ResourceNotFound"),
        arm_error(404, "ResourceGroupNotFound"),
        arm_present(None, true, Some(None)),
        arm_present(None, false, None),
        Evidence {
            carried_elsewhere: Some("/x".into()),
            ..arm_error(404, "ResourceNotFound")
        },
        transferred,
        arm_error(403, "AuthorizationFailed"),
        arm_error(404, "SubscriptionNotFound"),
        arm_error(503, "ServerBusy"),
    ];
    for e in &cases {
        seen.insert(judge(&vm(), e).reason);
    }
    seen.insert(judge(&identity(&["x"]), &Evidence::not_checked()).reason);
    assert_eq!(seen.len(), Reason::ALL.len());
}
