//! Pure decision rules: from an identity and the evidence gathered about its resource to a verdict.
//! No I/O, no clocks, no async. The product's promise lives here: *orphaned* only on an authoritative
//! answer; anything else is *unknown*, never *orphaned* and never silently *healthy*.

use crate::domain::{
    Answer, Evidence, EvidenceSource, GraphRow, Judgement, ManagedIdentity, Reason, Verdict,
};

/// ARM 404 codes that prove "this resource, its group or its parent is gone" (README, "Verdicts"; verdict
/// rules). An allowlist: any other 404 code (`SubscriptionNotFound`, `InvalidResourceType`,
/// `InvalidResourceNamespace`, `NoRegisteredProviderFound`, a location, api-version or principal that is
/// not found, a management group we may simply not see, ...) says nothing about the resource.
/// - `ResourceNotFound`: ARM itself (ARM-ERR `error-not-found.md`; docs/azure-behaviour.md §4, error catalogue).
/// - `NotFound`: resource providers' own code for a missing resource, e.g. "Cannot find ServerFarm with
///   name ..." (ARM-ERR; CLI captures in the docs/azure-behaviour.md §4).
/// - `ParentResourceNotFound`: the parent of a nested resource (a slot's site) is gone (ARM-ERR, "Parent
///   resource not found").
/// - `PolicyAssignmentNotFound`: Microsoft.Authorization for a missing policy assignment (Azure
///   PowerShell's `Get-AzPolicyAssignment` tests expect it for a name that is not assigned).
///
/// `ResourceGroupNotFound` proves it too and has a reason of its own.
const GONE: &[&str] = &[
    "ResourceNotFound",
    "NotFound",
    "ParentResourceNotFound",
    "PolicyAssignmentNotFound",
];

fn is_resource_gone(code: &str) -> bool {
    GONE.iter().any(|c| c.eq_ignore_ascii_case(code))
}

/// The tenant that ARM says the subscription belongs to, from a 401 `InvalidAuthenticationTokenTenant`:
/// "... It must match the tenant 'https://sts.windows.net/<B>/' associated with this subscription ..."
/// (Azure SDK for .NET test README capture, docs/azure-behaviour.md §4).
pub fn tenant_named_by_wrong_tenant_error(message: &str) -> Option<String> {
    let marker = "must match the tenant '";
    let start = message.find(marker)? + marker.len();
    let rest = &message[start..];
    let url = &rest[..rest.find('\'')?];
    let tenant = url.trim_end_matches('/').rsplit('/').next()?;
    (!tenant.is_empty()).then(|| tenant.to_ascii_lowercase())
}

fn judgement(verdict: Verdict, reason: Reason, detail: String) -> Judgement {
    Judgement {
        verdict,
        reason,
        detail,
    }
}

/// ARM's body for the resource shows no principal for this kind of identity. That is what an identity
/// switched off looks like, and also what an api-version that predates identities on the type returns.
/// It is proof only when the body was read with the newest api-version the provider lists (previews
/// included) and Resource Graph, a second witness, lists the resource without this principal.
fn absent_identity(
    identity: &ManagedIdentity,
    latest_version: bool,
    resource_graph: Option<&GraphRow>,
) -> Judgement {
    use Reason::*;
    use Verdict::*;
    if !latest_version {
        return judgement(
            Unknown,
            IdentityUnconfirmed,
            "ARM shows the resource without this identity, but not with the newest api-version of its type, which may be the only one that reports identities".into(),
        );
    }
    match resource_graph {
        Some(row)
            if !row
                .principal_id
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(&identity.object_id)) =>
        {
            judgement(
                Orphaned,
                PrincipalMismatch,
                "the resource exists but carries no such identity any more (identity switched off or detached); ARM and Resource Graph agree".into(),
            )
        }
        Some(_) => judgement(
            Unknown,
            IdentityUnconfirmed,
            "ARM shows the resource without this identity while Resource Graph shows it carrying it".into(),
        ),
        None => judgement(
            Unknown,
            IdentityUnconfirmed,
            "ARM shows the resource without this identity, and Resource Graph has no row to confirm it".into(),
        ),
    }
}

/// Judges one identity. Total: every input gives a verdict.
///
/// Whatever ARM says about the resource `alternativeNames` names, an identity whose principal Resource
/// Graph shows on another resource is in use: never an orphan (the resource may have moved).
pub fn judge(identity: &ManagedIdentity, evidence: &Evidence) -> Judgement {
    let j = judge_answer(identity, evidence);
    match &evidence.carried_elsewhere {
        Some(other) if j.verdict == Verdict::Orphaned => judgement(
            Verdict::Unknown,
            Reason::PrincipalInUseElsewhere,
            format!(
                "{}, but Resource Graph shows this principal on {other}: moved, with alternativeNames not updated?",
                j.detail
            ),
        ),
        _ => j,
    }
}

fn judge_answer(identity: &ManagedIdentity, evidence: &Evidence) -> Judgement {
    use Reason::*;
    use Verdict::*;
    let Some(resource) = &identity.resource else {
        return judgement(
            Unknown,
            UnrecognizedAlternativeNames,
            format!(
                "no ARM resource id recognised in alternativeNames {:?}",
                identity.alternative_names
            ),
        );
    };
    let invisible = evidence.subscription_visible == Some(false);
    // The subscription list could not be read: a 403 cannot be told apart from an invisible subscription.
    let visibility_unknown =
        resource.subscription_id().is_some() && evidence.subscription_visible.is_none();
    let sub = resource.subscription_id().unwrap_or("-");
    match &evidence.answer {
        Answer::NotChecked => {
            judgement(Unknown, CheckFailed, "the resource was not checked".into())
        }
        Answer::Failed { what } => judgement(
            Unknown,
            CheckFailed,
            format!("the check of the resource did not complete: {what}"),
        ),
        Answer::Present {
            principal_id,
            latest_version,
        } => {
            let carries = principal_id
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(&identity.object_id));
            if carries {
                judgement(
                    Healthy,
                    ResourcePresent,
                    "the resource exists and carries this identity".into(),
                )
            } else if evidence.source != EvidenceSource::Arm {
                // Resource Graph lags ARM: a mismatch there is a reason to ask ARM, not a verdict.
                judgement(
                    Unknown,
                    CheckFailed,
                    "Resource Graph shows another principal and ARM was not asked".into(),
                )
            } else if let Some(p) = principal_id {
                // ARM's own body for this very resource names another principal: recreated, or its
                // identity replaced. No api-version reports a principal that is not there.
                judgement(
                    Orphaned,
                    PrincipalMismatch,
                    format!(
                        "the resource exists but now carries principal {p}: it was recreated or its identity replaced"
                    ),
                )
            } else {
                absent_identity(identity, *latest_version, evidence.resource_graph.as_ref())
            }
        }
        Answer::Error {
            status,
            code,
            message,
        } => {
            if evidence.source != EvidenceSource::Arm {
                return judgement(
                    Unknown,
                    CheckFailed,
                    format!("an error answer ({status}) that is not ARM's GET of the resource"),
                );
            }
            let code_str = code.as_deref().unwrap_or("");
            // ARM's mark on its answer (every resource provider and ARM itself return it, RPC): a proxy,
            // a gateway or a stray path does not send it.
            let from_arm = evidence
                .request_id
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty());
            if *status == 401
                && from_arm
                && code_str.eq_ignore_ascii_case("InvalidAuthenticationTokenTenant")
            {
                let other = message
                    .as_deref()
                    .and_then(tenant_named_by_wrong_tenant_error);
                // Only for a subscription these credentials do not list: a subscription that is listed
                // belongs to this tenant, whatever an answer claims.
                return match other {
                    Some(t) if invisible && !t.eq_ignore_ascii_case(&identity.tenant_id) => judgement(
                        Orphaned,
                        SubscriptionTransferred,
                        format!(
                            "subscription {sub} now belongs to tenant {t}; managed identities do not survive a transfer"
                        ),
                    ),
                    _ => judgement(
                        Unknown,
                        CheckFailed,
                        "ARM rejected the token's tenant without naming another tenant for a subscription these credentials cannot list".into(),
                    ),
                };
            }
            // A 404 proves absence only when it is ARM's (an error body with a code, and ARM's request id:
            // a proxy, a gateway or a stray path sends neither) and its code is about the resource.
            if *status == 404 && (code.is_none() || !from_arm) {
                return judgement(
                    Unknown,
                    CheckFailed,
                    format!(
                        "a 404 {} is not ARM's answer about the resource (a proxy or a wrong path?)",
                        if code.is_none() {
                            "without an ARM error body"
                        } else {
                            "without ARM's x-ms-request-id"
                        }
                    ),
                );
            }
            // Any other 404 code is about something else (a provider, an api-version, a location, ...): no
            // answer about the resource or its subscription at all.
            if *status == 404
                && !is_resource_gone(code_str)
                && !code_str.eq_ignore_ascii_case("ResourceGroupNotFound")
                && !code_str.eq_ignore_ascii_case("SubscriptionNotFound")
            {
                return judgement(
                    Unknown,
                    CheckFailed,
                    format!("ARM answered 404 {code_str}: not an answer about the resource"),
                );
            }
            // A subscription we cannot see answers 403 (no role) or 404 (not found): that says the
            // subscription is out of reach, not that the resource is gone. Anything else (a 401 about the
            // token, a 400) is no answer at all and follows the rules below (check_failed).
            if invisible && matches!(*status, 403 | 404) {
                return judgement(
                    Unknown,
                    SubscriptionNotAccessible,
                    format!(
                        "subscription {sub} is not visible to these credentials (ARM answered {status} {code_str})"
                    ),
                );
            }
            match *status {
                404 if code_str.eq_ignore_ascii_case("ResourceGroupNotFound") => judgement(
                    Orphaned,
                    ResourceGroupNotFound,
                    format!(
                        "resource group {} no longer exists",
                        resource.resource_group().unwrap_or("-")
                    ),
                ),
                404 if code_str.eq_ignore_ascii_case("SubscriptionNotFound") => judgement(
                    Unknown,
                    SubscriptionNotAccessible,
                    format!("ARM does not find subscription {sub}"),
                ),
                404 if is_resource_gone(code_str) => judgement(
                    Orphaned,
                    ResourceNotFound,
                    format!("ARM answers 404 {code_str}: the resource no longer exists"),
                ),
                300..=399 => judgement(
                    Unknown,
                    CheckFailed,
                    format!(
                        "ARM answered with a redirect (HTTP {status}), which is never followed"
                    ),
                ),
                403 if visibility_unknown => judgement(
                    Unknown,
                    CheckFailed,
                    format!(
                        "ARM denies access ({code_str}) and the subscription list could not be read to tell why"
                    ),
                ),
                403 => judgement(
                    Unknown,
                    AccessDenied,
                    format!("ARM denies read access ({code_str}); grant Reader to check it"),
                ),
                _ => judgement(
                    Unknown,
                    CheckFailed,
                    format!(
                        "ARM answered {status} {}: not an answer about the resource",
                        if code_str.is_empty() {
                            "(no error code)"
                        } else {
                            code_str
                        }
                    ),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Evidence;

    const OID: &str = "11111111-1111-1111-1111-111111111111";
    const TENANT: &str = "aaaaaaaa-0000-0000-0000-000000000001";

    fn identity(names: &[&str]) -> ManagedIdentity {
        ManagedIdentity::from_alternative_names(
            TENANT,
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
            principal_id: principal_id.map(str::to_owned),
            latest_version,
        }
    }

    /// ARM's answer with Resource Graph's row beside it.
    fn arm_present(principal: Option<&str>, latest: bool, row: Option<Option<&str>>) -> Evidence {
        Evidence {
            resource_graph: row.map(|p| GraphRow {
                principal_id: p.map(str::to_owned),
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
            e.carried_elsewhere = Some("/subscriptions/s1/resourcegroups/rg2/providers/microsoft.compute/virtualmachines/vm1".into());
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
}
