//! The ARM GET of one resource, the authoritative answer: URLs built segment by segment, the
//! subscription's read quota, a 2xx taken only when it is the resource, the principal its body shows,
//! and an absent identity confirmed with the newest api-version.

use super::versions::{Versions, newest, newest_stable, refused_versions};
use super::{ARM_REFILL_PER_S, ARM_RESERVE, ArmClient, Check, PROBE_API_VERSION, non_empty};
use crate::azure::http::Call;
use crate::azure::transport::{Handled, parse_count};
use crate::azure::{Api, Reply};
use crate::domain::{Answer, ObjectId, ResourceId, SubscriptionId, TenantId};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Whether a 2xx body is ARM's representation of the resource asked for: a JSON object whose `id` is
/// the requested id (case-insensitively; a trailing `/` ignored). A gateway's `{}`, a collection
/// (`{"value": [...]}`), another resource's body or a redirect that landed elsewhere is not.
pub(super) fn is_the_resource(body: &Value, resource: &ResourceId) -> bool {
    body.get("id").and_then(Value::as_str).is_some_and(|id| {
        id.trim()
            .trim_end_matches('/')
            .eq_ignore_ascii_case(resource.as_str())
    })
}

impl ArmClient {
    /// `{endpoint}/{segments...}?api-version=...`, each segment percent-encoded by the URL library (never
    /// spliced into a string), so no segment can add a path level, a query or a fragment.
    pub(super) fn url(&self, segments: &[&str], api_version: &str) -> Option<String> {
        let mut u = url::Url::parse(&self.endpoint).ok()?;
        {
            let mut segs = u.path_segments_mut().ok()?;
            segs.pop_if_empty();
            for s in segments {
                if s.is_empty() || *s == "." || *s == ".." {
                    return None;
                }
                segs.push(s);
            }
        }
        u.query_pairs_mut().append_pair("api-version", api_version);
        Some(u.into())
    }

    pub(super) fn resource_url(&self, resource: &ResourceId, api_version: &str) -> Option<String> {
        let segments: Vec<&str> = resource
            .as_str()
            .trim_start_matches('/')
            .split('/')
            .collect();
        self.url(&segments, api_version)
    }

    /// Waits until the subscription's read bucket, as last announced and refilled since, holds more than
    /// the reserve: pacing instead of bouncing off 429s. Never longer than the reserve takes to refill.
    pub(super) async fn pace_arm(&self, key: &str) {
        let wait = {
            let q = self.arm_quota.lock();
            q.get(key).and_then(|(remaining, at)| {
                let estimate =
                    (*remaining).max(0) as f64 + at.elapsed().as_secs_f64() * ARM_REFILL_PER_S;
                (estimate < ARM_RESERVE).then(|| {
                    Duration::from_secs_f64(
                        ((ARM_RESERVE - estimate) / ARM_REFILL_PER_S).clamp(0.0, 1.0),
                    )
                })
            })
        };
        if let Some(w) = wait {
            tracing::debug!(
                ?w,
                subscription = key,
                "pacing ARM reads to the subscription's quota"
            );
            tokio::time::sleep(w).await;
        }
    }

    pub(super) fn note_arm_quota(&self, key: &str, reply: &Reply) {
        if let Some(r) = reply
            .header("x-ms-ratelimit-remaining-subscription-reads")
            .and_then(parse_count)
        {
            self.arm_quota
                .lock()
                .insert(key.to_owned(), (r, Instant::now()));
        }
    }

    /// One ARM GET of the resource with `version`, reduced to an [`Answer`]. A 2xx counts only when it
    /// is the resource (its `id`); anything else is retried, then a failed check.
    pub(super) async fn read_resource(
        &self,
        tenant: &TenantId,
        resource: &ResourceId,
        version: &str,
    ) -> Check {
        let mut check = Check {
            answer: Answer::NotChecked,
            request_id: None,
            correlation_request_id: None,
            checked_at: chrono::Utc::now(),
        };
        let Some(url) = self.resource_url(resource, version) else {
            check.answer = Answer::Failed {
                what: "resource id does not form a URL".into(),
            };
            return check;
        };
        let call = Call::get(Api::Arm, tenant.as_str(), &url);
        let quota_key = resource
            .subscription_id()
            .map_or_else(|| "tenant".to_owned(), SubscriptionId::to_string);
        self.pace_arm(&quota_key).await;
        let is_uami = resource.is_user_assigned_identity();
        let res = self
            .http
            .execute(&call, |reply| {
                self.note_arm_quota(&quota_key, &reply);
                if reply.is_success() {
                    match serde_json::from_slice::<Value>(&reply.body) {
                        Ok(v) if is_the_resource(&v, resource) => {
                            let answer = match resource_principal(&v, is_uami) {
                                Err(why) => Answer::Failed { what: why },
                                Ok(principal_id) => Answer::Present {
                                    principal_id,
                                    latest_version: false,
                                },
                            };
                            Handled::Done((answer, reply))
                        }
                        Ok(_) => Handled::Retry(format!(
                            "ARM answered {} with a body that is not the resource (no matching id)",
                            reply.status
                        )),
                        Err(e) => Handled::Retry(format!("resource body does not decode: {e}")),
                    }
                } else {
                    // Bounded and redacted: it goes into findings, the API and exports.
                    let (code, message) = reply
                        .error_body()
                        .map(|(c, m)| (crate::azure::shorten(&c), crate::azure::shorten(&m)))
                        .unzip();
                    Handled::Done((
                        Answer::Error {
                            status: reply.status,
                            code,
                            message,
                        },
                        reply,
                    ))
                }
            })
            .await;
        check.checked_at = chrono::Utc::now();
        match res {
            Err(e) => {
                check.answer = Answer::Failed {
                    what: e.to_string(),
                };
            }
            Ok((answer, reply)) => {
                check.answer = answer;
                check.request_id = reply.arm_request_id();
                check.correlation_request_id = reply.correlation_request_id();
            }
        }
        check
    }

    /// ARM GET of one resource: the authoritative answer. Never an error: failures become
    /// [`Answer::Failed`], which the judge turns into *unknown*.
    ///
    /// Read with the newest stable api-version of the type. When the resource is there but shows no
    /// principal for this identity, it is read again with the newest version of any kind (previews
    /// included): older versions of some types do not report `identity` at all.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, resource = %resource))]
    pub async fn check_resource(
        &self,
        tenant: &TenantId,
        resource: &ResourceId,
        provider_subscription: Option<&SubscriptionId>,
    ) -> Check {
        // Without discovered versions, ask with one no provider can accept: ARM's refusal lists the
        // versions it takes (NoRegisteredProviderFound / UnsupportedApiVersionValue), and the answer to
        // the probe itself is never taken as evidence.
        let (mut versions, mut probing, discovery_error) = match self
            .api_versions(tenant, resource, provider_subscription)
            .await
        {
            Ok(v) => (v, false, None),
            Err(e) => (
                Versions {
                    read_from: vec![PROBE_API_VERSION.to_owned()],
                    newest: None,
                    complete: false,
                },
                true,
                Some(e),
            ),
        };
        let mut learnt_once = false;
        loop {
            let version =
                newest_stable(&versions.read_from).unwrap_or_else(|| PROBE_API_VERSION.to_owned());
            let mut check = self.read_resource(tenant, resource, &version).await;
            // A version the RP does not take: use the ones its message lists, once.
            if !learnt_once
                && let Some(listed) = refused_versions(&check, &version)
                && newest_stable(&listed).is_some_and(|v| v != version)
            {
                self.learnt
                    .lock()
                    .insert(Self::type_key(resource), listed.clone());
                // ARM's own list for this resource (its location), just now.
                versions = Versions {
                    newest: newest(&listed),
                    read_from: listed,
                    complete: true,
                };
                probing = false;
                learnt_once = true;
                continue;
            }
            if probing {
                check.answer = Answer::Failed {
                    what: format!(
                        "{}; ARM's answer to a probe did not list supported versions",
                        discovery_error.unwrap_or_default()
                    ),
                };
                return check;
            }
            if matches!(
                check.answer,
                Answer::Present {
                    principal_id: None,
                    ..
                }
            ) {
                return self
                    .confirm_absence(tenant, resource, check, version, versions)
                    .await;
            }
            return check;
        }
    }

    /// The resource shows no principal for this identity when read with `read`: read it again with the
    /// newest api-version there is, so an absence is never an older version's omission. Marks the answer
    /// `latest_version` when it was read with the newest of a complete list. A re-read that gives no
    /// answer at all is a failed check; one refused for its version follows ARM's own list, once more.
    pub(super) async fn confirm_absence(
        &self,
        tenant: &TenantId,
        resource: &ResourceId,
        mut check: Check,
        mut read: String,
        mut versions: Versions,
    ) -> Check {
        for _ in 0..3 {
            let latest = versions.newest.clone().unwrap_or_else(|| read.clone());
            if latest == read {
                if let Answer::Present { latest_version, .. } = &mut check.answer {
                    *latest_version = versions.complete;
                }
                return check;
            }
            let again = self.read_resource(tenant, resource, &latest).await;
            match &again.answer {
                Answer::Present { .. } => {
                    check = again;
                    read = latest;
                }
                Answer::Failed { what } => {
                    return Check {
                        answer: Answer::Failed {
                            what: format!(
                                "re-reading with the newest api-version {latest}: {what}"
                            ),
                        },
                        ..again
                    };
                }
                _ => match refused_versions(&again, &latest) {
                    Some(listed) if newest(&listed).is_some() => {
                        versions = Versions {
                            newest: newest(&listed),
                            read_from: listed,
                            complete: true,
                        };
                    }
                    _ => {
                        // Not an answer about the resource (a redirect, a 401/403, a proxy): the absence
                        // stays unconfirmed, and the check did not complete.
                        let status = again.answer.clone();
                        return Check {
                            answer: Answer::Failed {
                                what: format!(
                                    "re-reading with the newest api-version {latest} gave no answer about the resource ({})",
                                    describe_answer(&status)
                                ),
                            },
                            ..again
                        };
                    }
                },
            }
        }
        check
    }
}

pub(super) fn describe_answer(a: &Answer) -> String {
    match a {
        Answer::Error { status, code, .. } => {
            format!(
                "HTTP {status} {}",
                code.as_deref().unwrap_or("without an error code")
            )
        }
        Answer::Present { .. } => "the resource".into(),
        Answer::Failed { what } => what.clone(),
        Answer::NotChecked => "nothing".into(),
    }
}

/// A key of a JSON object, matched exactly or else case-insensitively (providers differ in casing).
pub(super) fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Provisioning states after which a resource's body is settled (RPC: terminal states).
pub(super) const SETTLED: &[&str] = &["Succeeded", "Failed", "Canceled", "Cancelled"];

/// The principal a resource's body shows for the identity kind: `properties.principalId` of a
/// user-assigned identity (MSI-SPEC), `identity.principalId` otherwise. `Err` when the body shows no
/// principal but cannot be taken at its word: a system-assigned identity switched on whose principal is
/// not there yet, or a resource still being provisioned.
pub(super) fn resource_principal(body: &Value, is_uami: bool) -> Result<Option<ObjectId>, String> {
    let holder = if is_uami {
        get_ci(body, "properties")
    } else {
        get_ci(body, "identity")
    };
    if let Some(p) = non_empty(holder.and_then(|h| get_ci(h, "principalId"))) {
        return Ok(Some(p.into()));
    }
    if !is_uami
        && let Some(kind) = holder
            .and_then(|h| get_ci(h, "type"))
            .and_then(Value::as_str)
        && kind.to_ascii_lowercase().contains("systemassigned")
    {
        return Err(format!(
            "the resource's identity type is {kind:?} but it shows no principal yet (being provisioned?)"
        ));
    }
    if let Some(state) = get_ci(body, "properties")
        .and_then(|p| get_ci(p, "provisioningState"))
        .and_then(Value::as_str)
        && !SETTLED.iter().any(|s| s.eq_ignore_ascii_case(state))
    {
        return Err(format!(
            "the resource is {state:?}: its identity is not settled"
        ));
    }
    Ok(None)
}
