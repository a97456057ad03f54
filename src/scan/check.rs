//! `miaudit check`, the doctor: per tenant, every token, one Graph call (one more for Graph delta when
//! it is on), the subscription listing and one Resource Graph query, each reported as a check with
//! what failed and the exact fix. Every check runs whatever the others did, so one run names every
//! problem. Coverage: the subscriptions named by the managed identities of the first Graph page, and
//! how many of them the credential lists.

use super::Scanner;
use crate::azure::{Api, AzureError};
use crate::domain::{SubscriptionId, TenantId};
use crate::report::Coverage;
use serde::Serialize;
use std::collections::BTreeSet;

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do about a failure (`None` when it passed).
    pub fix: Option<String>,
}

/// One tenant's checklist.
#[derive(Debug, Clone, Serialize)]
pub struct TenantCheck {
    pub tenant_id: TenantId,
    pub ok: bool,
    pub checks: Vec<Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
}

fn pass(name: &'static str, detail: String) -> Check {
    Check {
        name,
        ok: true,
        detail,
        fix: None,
    }
}

fn fail(name: &'static str, detail: String, fix: String) -> Check {
    Check {
        name,
        ok: false,
        detail,
        fix: Some(fix),
    }
}

/// What the doctor says to do about `e`, met by `api` in `tenant` with the application `client`.
pub fn fix_for(e: &AzureError, api: Api, tenant: &TenantId, client: &str) -> String {
    let text = e.to_string();
    let reader = reader_fix(tenant, client);
    if let Some(code) = aadsts(&text) {
        return match code {
            700_016 => format!(
                "the application {client} is not in tenant {tenant}: as that tenant's admin, provision it (az ad sp create --id {client}) and grant admin consent (https://login.microsoftonline.com/{tenant}/adminconsent?client_id={client})"
            ),
            90_002 => format!(
                "tenant {tenant} does not exist: correct the [[tenants]] id (a tenant GUID or a verified domain)"
            ),
            7_000_215 => format!(
                "the client secret is wrong (the secret's value, not its id, is needed): create one with az ad app credential reset --id {client} --append and configure it"
            ),
            7_000_222 => format!(
                "the client secret has expired: create a new one with az ad app credential reset --id {client} --append"
            ),
            700_027 => format!(
                "the certificate is not registered on the application: az ad app credential reset --id {client} --cert @cert.pem --append"
            ),
            700_024 => "the client assertion is outside its validity: check this machine's clock (NTP)".into(),
            70_021 => "no federated identity credential of the application matches the workload's token: check its issuer and subject (az identity federated-credential list)".into(),
            65_001 | 650_052 => format!(
                "admin consent is missing in tenant {tenant}: https://login.microsoftonline.com/{tenant}/adminconsent?client_id={client}"
            ),
            _ => format!(
                "Entra refused the credential (AADSTS{code}): see https://login.microsoftonline.com/error?code={code}"
            ),
        };
    }
    match (api, e) {
        (Api::Graph, AzureError::Status { status: 403, .. }) => format!(
            "grant the application permission Application.Read.All (Microsoft Graph, application) and admin consent in tenant {tenant}"
        ),
        (Api::Graph, AzureError::Status { status: 401, .. }) => format!(
            "Graph refused the token: check that [azure] graph_endpoint and the cloud match the tenant {tenant}"
        ),
        (
            Api::ResourceGraph | Api::Arm,
            AzureError::Status {
                status: 403 | 401, ..
            },
        ) => reader,
        (_, AzureError::Exhausted { .. }) => format!(
            "{api} gave no usable answer: check network access to it from here (proxy, firewall, DNS) and try again"
        ),
        _ => format!("{api} failed: {text}"),
    }
}

/// The fix for a credential that does not see every subscription: Reader at the tenant root management
/// group (whose id is the tenant's).
fn reader_fix(tenant: &TenantId, client: &str) -> String {
    format!(
        "assign the Reader role at the tenant root management group: az role assignment create --assignee {client} --role Reader --scope /providers/Microsoft.Management/managementGroups/{tenant}"
    )
}

/// The AADSTS code in a token error's text.
fn aadsts(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")? + "AADSTS".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Scanner {
    /// Runs every check for `tenant`; `client` names the application in the fixes.
    pub async fn check_tenant(&self, tenant: &TenantId, client: &str, delta: bool) -> TenantCheck {
        let clients = self.clients(tenant);
        let mut checks = Vec::new();
        let (graph_scope, arm_scope) = self.scopes(tenant);
        for (name, scope, api) in [
            ("token_graph", graph_scope, Api::Graph),
            ("token_arm", arm_scope, Api::Arm),
        ] {
            checks.push(match clients.tokens.token(tenant.as_str(), scope).await {
                Ok(_) => pass(
                    name,
                    format!(
                        "a token for {scope}{}",
                        clients
                            .tokens
                            .chosen_method()
                            .map(|m| format!(" ({})", m.name()))
                            .unwrap_or_default()
                    ),
                ),
                Err(e) => fail(name, e.to_string(), fix_for(&e, api, tenant, client)),
            });
        }
        let sample = match clients.graph.probe(tenant).await {
            Ok(ids) => {
                checks.push(pass(
                    "graph",
                    format!(
                        "listed managed identities ({} on the first page)",
                        ids.len()
                    ),
                ));
                Some(ids)
            }
            Err(e) => {
                checks.push(fail(
                    "graph",
                    e.to_string(),
                    fix_for(&e, Api::Graph, tenant, client),
                ));
                None
            }
        };
        if delta {
            checks.push(match clients.graph.start_delta(tenant).await {
                Ok(_) => pass("graph_delta", "Graph delta answers".into()),
                Err(e) => {
                    let fix = match &e {
                        AzureError::Status { status: 403, .. } => format!(
                            "grant the application permission Directory.Read.All (Microsoft Graph, application) and admin consent in tenant {tenant}, or set [scan] graph_delta = false"
                        ),
                        _ => fix_for(&e, Api::Graph, tenant, client),
                    };
                    fail("graph_delta", e.to_string(), fix)
                }
            });
        }
        let listed = match clients.arm.fetch_subscriptions(tenant).await {
            Ok(subs) if subs.is_empty() => {
                checks.push(fail(
                    "subscriptions",
                    "the credential sees no subscription".into(),
                    reader_fix(tenant, client),
                ));
                Some(BTreeSet::new())
            }
            Ok(subs) => {
                checks.push(pass(
                    "subscriptions",
                    format!("{} subscriptions listed", subs.len()),
                ));
                Some(subs.into_keys().collect::<BTreeSet<SubscriptionId>>())
            }
            Err(e) => {
                checks.push(fail(
                    "subscriptions",
                    e.to_string(),
                    fix_for(&e, Api::Arm, tenant, client),
                ));
                None
            }
        };
        if let Some(subs) = listed.as_ref().filter(|s| !s.is_empty()) {
            let batch: Vec<SubscriptionId> = subs
                .iter()
                .take(crate::arm::ARG_SUBSCRIPTION_BATCH)
                .cloned()
                .collect();
            checks.push(
                match clients.arm.probe_resource_graph(tenant, &batch).await {
                    Ok(_) => pass("resource_graph", "Resource Graph answers a query".into()),
                    Err(e) => fail(
                        "resource_graph",
                        e.to_string(),
                        fix_for(&e, Api::ResourceGraph, tenant, client),
                    ),
                },
            );
        }
        let coverage = match (&sample, &listed) {
            (Some(ids), Some(subs)) => {
                let referenced: BTreeSet<&SubscriptionId> = ids
                    .iter()
                    .filter_map(|i| i.resource.as_ref()?.subscription_id())
                    .collect();
                let seen = referenced.iter().filter(|s| subs.contains(**s)).count();
                let c = Coverage::new(referenced.len() as u64, seen as u64);
                checks.push(if seen == referenced.len() {
                    pass(
                        "coverage",
                        format!(
                            "all {} subscriptions that the first page's managed identities name are listed",
                            referenced.len()
                        ),
                    )
                } else {
                    fail(
                        "coverage",
                        format!(
                            "the credential lists {seen} of {} subscriptions that managed identities name (first Graph page); identities in the others can only be unknown",
                            referenced.len()
                        ),
                        reader_fix(tenant, client),
                    )
                });
                Some(c)
            }
            _ => None,
        };
        TenantCheck {
            tenant_id: tenant.clone(),
            ok: checks.iter().all(|c| c.ok),
            checks,
            coverage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_gets_its_own_fix() {
        let t = TenantId::new("00000000-0000-0000-0000-000000000001");
        let auth = |code: &str| {
            AzureError::Auth(format!(
                "token request for tenant t failed: HTTP 400 invalid_client: AADSTS{code}: text"
            ))
        };
        assert!(
            fix_for(&auth("700016"), Api::Graph, &t, "app").contains("az ad sp create --id app")
        );
        assert!(
            fix_for(&auth("7000215"), Api::Graph, &t, "app").contains("client secret is wrong")
        );
        assert!(fix_for(&auth("700027"), Api::Graph, &t, "app").contains("--cert @cert.pem"));
        assert!(fix_for(&auth("12345"), Api::Graph, &t, "app").contains("AADSTS12345"));
        let status = |api, status| AzureError::Status {
            api,
            status,
            code: "Authorization_RequestDenied".into(),
            message: "Insufficient privileges".into(),
        };
        assert!(
            fix_for(&status(Api::Graph, 403), Api::Graph, &t, "app")
                .contains("Application.Read.All")
        );
        assert!(
            fix_for(&status(Api::ResourceGraph, 403), Api::ResourceGraph, &t, "app")
                .contains("--role Reader --scope /providers/Microsoft.Management/managementGroups/00000000-0000-0000-0000-000000000001")
        );
    }
}
