//! Pure decision rules: from an identity and the evidence gathered about its resource to a verdict.
//! No I/O, no clocks, no async. The product's promise lives here: *orphaned* only on an authoritative
//! answer; anything else is *unknown*, never *orphaned* and never silently *healthy*.

use crate::domain::{
    Answer, Evidence, EvidenceSource, Judgement, ManagedIdentity, Reason, Verdict,
};

/// 404 codes that say nothing about the resource itself (ARCHITECTURE.md verdict rules).
const NOT_ABOUT_THE_RESOURCE: &[&str] = &[
    "SubscriptionNotFound",
    "InvalidResourceType",
    "NoRegisteredProviderFound",
    "MissingSubscriptionRegistration",
    "InvalidApiVersionParameter",
    "TenantNotFound",
    // A management group we cannot find may simply be one we cannot see.
    "ManagementGroupNotFound",
];

/// Does an ARM 404 with this `error.code` prove the resource is gone? ARM answers `ResourceNotFound` /
/// `ResourceGroupNotFound`; resource providers use their own not-found codes for a GET of a missing
/// resource (`NotFound`, `ParentResourceNotFound`, `PolicyAssignmentNotFound`, ...), ARM-ERR
/// `error-not-found.md` and captures in the facts sheet §4.
fn is_resource_not_found(code: &str) -> bool {
    code.len() >= "NotFound".len()
        && code
            .get(code.len() - "NotFound".len()..)
            .is_some_and(|s| s.eq_ignore_ascii_case("NotFound"))
        && !NOT_ABOUT_THE_RESOURCE
            .iter()
            .any(|c| c.eq_ignore_ascii_case(code))
}

/// The tenant that ARM says the subscription belongs to, from a 401 `InvalidAuthenticationTokenTenant`:
/// "... It must match the tenant 'https://sts.windows.net/<B>/' associated with this subscription ..."
/// (Azure SDK for .NET test README capture, facts sheet §4).
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

/// Judges one identity. Total: every input gives a verdict.
pub fn judge(identity: &ManagedIdentity, evidence: &Evidence) -> Judgement {
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
        Answer::Present { principal_id } => {
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
            } else {
                let detail = match principal_id {
                    Some(p) => format!(
                        "the resource exists but now carries principal {p}: it was recreated or its identity replaced"
                    ),
                    None => "the resource exists but carries no such identity any more (identity switched off or detached)".into(),
                };
                judgement(Orphaned, PrincipalMismatch, detail)
            }
        }
        Answer::Error {
            status,
            code,
            message,
        } => {
            let code_str = code.as_deref().unwrap_or("");
            if *status == 401 && code_str.eq_ignore_ascii_case("InvalidAuthenticationTokenTenant") {
                let other = message
                    .as_deref()
                    .and_then(tenant_named_by_wrong_tenant_error);
                return match other {
                    Some(t) if !t.eq_ignore_ascii_case(&identity.tenant_id) => judgement(
                        Orphaned,
                        SubscriptionTransferred,
                        format!(
                            "subscription {sub} now belongs to tenant {t}; managed identities do not survive a transfer"
                        ),
                    ),
                    _ => judgement(
                        Unknown,
                        CheckFailed,
                        "ARM rejected the token's tenant without naming another tenant".into(),
                    ),
                };
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
                404 if is_resource_not_found(code_str) => judgement(
                    Orphaned,
                    ResourceNotFound,
                    format!("ARM answers 404 {code_str}: the resource no longer exists"),
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

    fn arm_error(status: u16, code: &str) -> Evidence {
        ev(
            EvidenceSource::Arm,
            Answer::Error {
                status,
                code: Some(code.into()),
                message: Some("m".into()),
            },
        )
    }

    fn verdict(i: &ManagedIdentity, e: &Evidence) -> (Verdict, Reason) {
        let j = judge(i, e);
        (j.verdict, j.reason)
    }

    #[test]
    fn present_with_same_principal_is_healthy_whatever_the_casing() {
        for source in [EvidenceSource::Arm, EvidenceSource::ResourceGraph] {
            let e = ev(
                source,
                Answer::Present {
                    principal_id: Some(OID.to_uppercase()),
                },
            );
            assert_eq!(
                verdict(&vm(), &e),
                (Verdict::Healthy, Reason::ResourcePresent)
            );
        }
    }

    #[test]
    fn arm_mismatch_or_missing_identity_is_principal_mismatch() {
        for p in [
            Some("22222222-2222-2222-2222-222222222222".to_owned()),
            None,
        ] {
            let e = ev(EvidenceSource::Arm, Answer::Present { principal_id: p });
            assert_eq!(
                verdict(&vm(), &e),
                (Verdict::Orphaned, Reason::PrincipalMismatch)
            );
        }
    }

    #[test]
    fn resource_graph_mismatch_is_never_an_orphan() {
        let e = ev(
            EvidenceSource::ResourceGraph,
            Answer::Present { principal_id: None },
        );
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
            "NoRegisteredProviderFound",
            "ManagementGroupNotFound",
        ] {
            assert_eq!(
                verdict(&vm(), &arm_error(404, code)),
                (Verdict::Unknown, Reason::CheckFailed),
                "{code}"
            );
        }
        let no_body = ev(
            EvidenceSource::Arm,
            Answer::Error {
                status: 404,
                code: None,
                message: None,
            },
        );
        assert_eq!(
            verdict(&vm(), &no_body),
            (Verdict::Unknown, Reason::CheckFailed)
        );
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
        ev(
            EvidenceSource::Arm,
            Answer::Error {
                status: 401,
                code: Some("InvalidAuthenticationTokenTenant".into()),
                message: Some(format!(
                    "The access token is from the wrong issuer 'https://sts.windows.net/{TENANT}/'. It must match the tenant 'https://sts.windows.net/{named}/' associated with this subscription. Please use the authority (URL) 'https://login.windows.net/{named}' to get the token."
                )),
            },
        )
    }

    #[test]
    fn wrong_tenant_naming_another_tenant_is_subscription_transferred() {
        let mut e = wrong_tenant("bbbbbbbb-0000-0000-0000-000000000002");
        e.subscription_visible = Some(false);
        assert_eq!(
            verdict(&vm(), &e),
            (Verdict::Orphaned, Reason::SubscriptionTransferred)
        );
        // Naming our own tenant proves nothing.
        assert_eq!(verdict(&vm(), &wrong_tenant(TENANT)).0, Verdict::Unknown);
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
        let cases = [
            ev(
                EvidenceSource::Arm,
                Answer::Present {
                    principal_id: Some(OID.into()),
                },
            ),
            arm_error(404, "ResourceNotFound"),
            arm_error(404, "ResourceGroupNotFound"),
            ev(EvidenceSource::Arm, Answer::Present { principal_id: None }),
            wrong_tenant("bbbbbbbb-0000-0000-0000-000000000002"),
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
