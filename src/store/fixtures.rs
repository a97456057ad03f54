//! Scans to record, for the store's tests.

use crate::domain::{
    EvidenceReport, EvidenceSource, Finding, IdentityType, Reason, Summary, Trigger, Verdict,
};
use crate::report::{ScanReport, TenantReport};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A scan of tenant `t1` that judged one identity, `o1`, orphaned.
pub(super) fn report(scan_id: &str, complete: bool) -> ScanReport {
    let now = Utc::now();
    let f = Finding {
        tenant_id: "t1".into(),
        object_id: "o1".into(),
        app_id: "a1".into(),
        display_name: "vm1".into(),
        identity_type: IdentityType::SystemAssigned,
        resource_id: Some(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
                .into(),
        ),
        subscription_id: Some("s".into()),
        resource_type: Some("microsoft.compute/virtualmachines".into()),
        verdict: Verdict::Orphaned,
        reason: Reason::ResourceNotFound,
        detail: "gone".into(),
        evidence: EvidenceReport {
            source: EvidenceSource::Arm,
            status: Some(404),
            code: Some("ResourceNotFound".into()),
            request_id: Some("rid".into()),
            correlation_request_id: Some("cid".into()),
            checked_at: Some(now),
        },
    };
    ScanReport {
        scan_id: scan_id.into(),
        started_at: now,
        finished_at: now,
        complete,
        trigger: Trigger::Cli,
        tenants: vec![TenantReport {
            unjudged: 0,
            summary: Summary::default(),
            arm_checks: 0,
            staging_failed: false,
            subscription_coverage: None,
            role_assignments: None,
            dangling: None,
            tenant_id: "t1".into(),
            complete,
            inventory_complete: true,
            identities: 1,
            errors: vec!["e".into()],
            requests: Default::default(),
            delta_link: None,
            full_sync_at: None,
        }],
        summary: Summary {
            total: 1,
            healthy: 0,
            orphaned: 1,
            unknown: 0,
        },
        findings: vec![f],
    }
}

/// The tenant of [`finding`] and [`scan`].
pub(super) const T: &str = "00000000-0000-0000-0000-00000000000a";

/// An identity of tenant [`T`] with this verdict.
pub(crate) fn finding(object: &str, verdict: Verdict, reason: Reason) -> Finding {
    Finding {
        tenant_id: T.into(),
        object_id: object.into(),
        app_id: format!("app-{object}"),
        display_name: format!("name-{object}"),
        identity_type: IdentityType::SystemAssigned,
        resource_id: Some(format!(
            "/subscriptions/S1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{object}"
        )),
        subscription_id: Some("S1".into()),
        resource_type: Some("microsoft.compute/virtualmachines".into()),
        verdict,
        reason,
        detail: "d".into(),
        evidence: EvidenceReport {
            source: EvidenceSource::Arm,
            status: Some(404),
            code: Some("ResourceNotFound".into()),
            request_id: Some(format!("req-{object}")),
            correlation_request_id: None,
            checked_at: None,
        },
    }
}

/// A scan of tenant [`T`], `hours` after 2026-01-01, of these verdicts.
pub(crate) fn scan(
    id: &str,
    hours: i64,
    findings: Vec<Finding>,
    inventory_complete: bool,
) -> ScanReport {
    let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc)
        + chrono::Duration::hours(hours);
    ScanReport {
        scan_id: id.into(),
        started_at: at,
        finished_at: at,
        complete: inventory_complete,
        trigger: Trigger::Schedule,
        tenants: vec![TenantReport {
            unjudged: 0,
            summary: Summary::default(),
            arm_checks: 0,
            staging_failed: false,
            subscription_coverage: None,
            role_assignments: None,
            dangling: None,
            tenant_id: T.into(),
            complete: inventory_complete,
            inventory_complete,
            identities: findings.len() as u64,
            errors: vec![],
            requests: Default::default(),
            delta_link: None,
            full_sync_at: None,
        }],
        summary: Summary::default(),
        findings,
    }
}

/// A `confirm_after` of two hours.
pub(super) const TWO_H: Duration = Duration::from_secs(7200);
