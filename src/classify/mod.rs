//! Pure decision rules: from an identity and the evidence gathered about its resource to a verdict.
//! No I/O, no clocks, no async. The product's promise lives here: *orphaned* only on an authoritative
//! answer; anything else is *unknown*, never *orphaned* and never silently *healthy*.

use crate::domain::{
    Answer, Evidence, EvidenceSource, GraphRow, Judgement, ManagedIdentity, ObjectId, Reason,
    ResourceId, SubscriptionId, TenantId, Verdict,
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
pub fn tenant_named_by_wrong_tenant_error(message: &str) -> Option<TenantId> {
    let marker = "must match the tenant '";
    let start = message.find(marker)? + marker.len();
    let rest = &message[start..];
    let url = &rest[..rest.find('\'')?];
    let tenant = url.trim_end_matches('/').rsplit('/').next()?;
    (!tenant.is_empty()).then(|| TenantId::new(tenant))
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
            if row.principal_id.as_ref() != Some(&identity.object_id) =>
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
        } => judge_present(identity, evidence, principal_id.as_ref(), *latest_version),
        Answer::Error {
            status,
            code,
            message,
        } => judge_error(
            identity,
            resource,
            evidence,
            *status,
            code.as_deref(),
            message.as_deref(),
        ),
    }
}

/// ARM's (or Resource Graph's) body of the resource, showing `principal_id` for this kind of identity.
fn judge_present(
    identity: &ManagedIdentity,
    evidence: &Evidence,
    principal_id: Option<&ObjectId>,
    latest_version: bool,
) -> Judgement {
    use Reason::*;
    use Verdict::*;
    let carries = principal_id == Some(&identity.object_id);
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
        absent_identity(identity, latest_version, evidence.resource_graph.as_ref())
    }
}

/// An error answer: only ARM's own (its request id, its error body), and only codes about the resource,
/// the resource group or the subscription, are answers at all.
fn judge_error(
    identity: &ManagedIdentity,
    resource: &ResourceId,
    evidence: &Evidence,
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
) -> Judgement {
    use Reason::*;
    use Verdict::*;
    let invisible = evidence.subscription_visible == Some(false);
    // The subscription list could not be read: a 403 cannot be told apart from an invisible subscription.
    let visibility_unknown =
        resource.subscription_id().is_some() && evidence.subscription_visible.is_none();
    let sub = resource
        .subscription_id()
        .map_or("-", SubscriptionId::as_str);
    if evidence.source != EvidenceSource::Arm {
        return judgement(
            Unknown,
            CheckFailed,
            format!("an error answer ({status}) that is not ARM's GET of the resource"),
        );
    }
    let code_str = code.unwrap_or("");
    // ARM's mark on its answer (every resource provider and ARM itself return it, RPC): a proxy,
    // a gateway or a stray path does not send it.
    let from_arm = evidence
        .request_id
        .as_deref()
        .is_some_and(|r| !r.trim().is_empty());
    if status == 401
        && from_arm
        && code_str.eq_ignore_ascii_case("InvalidAuthenticationTokenTenant")
    {
        return transferred(identity, invisible, sub, message);
    }
    // A 404 proves absence only when it is ARM's (an error body with a code, and ARM's request id:
    // a proxy, a gateway or a stray path sends neither) and its code is about the resource.
    if status == 404 && (code.is_none() || !from_arm) {
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
    if status == 404
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
    if invisible && matches!(status, 403 | 404) {
        return judgement(
            Unknown,
            SubscriptionNotAccessible,
            format!(
                "subscription {sub} is not visible to these credentials (ARM answered {status} {code_str})"
            ),
        );
    }
    by_status(resource, status, code_str, sub, visibility_unknown)
}

/// ARM's 401 `InvalidAuthenticationTokenTenant`: a transfer only when it names another tenant, for a
/// subscription these credentials do not list.
fn transferred(
    identity: &ManagedIdentity,
    invisible: bool,
    sub: &str,
    message: Option<&str>,
) -> Judgement {
    use Reason::*;
    use Verdict::*;
    let other = message.and_then(tenant_named_by_wrong_tenant_error);
    // Only for a subscription these credentials do not list: a subscription that is listed
    // belongs to this tenant, whatever an answer claims.
    match other {
        Some(t) if invisible && t != identity.tenant_id => judgement(
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
    }
}

/// ARM's own error answer about the resource, its group or its subscription, by status.
fn by_status(
    resource: &ResourceId,
    status: u16,
    code_str: &str,
    sub: &str,
    visibility_unknown: bool,
) -> Judgement {
    use Reason::*;
    use Verdict::*;
    match status {
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
            format!("ARM answered with a redirect (HTTP {status}), which is never followed"),
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

#[cfg(test)]
mod tests;
