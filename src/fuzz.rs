//! Property-based fuzzing (proptest) of everything that reads outside input: the `alternativeNames` /
//! `ResourceId` parser, the decoding of Graph, Resource Graph, ARM and token responses, the header
//! parsers, the judge and the simulator's KQL parser. No input may panic or hang; parsed values keep
//! their invariants; the judge never says *orphaned* without an authoritative answer.
//!
//! Cases per target: `MIAUDIT_FUZZ_CASES` (default 2,000, what CI runs); the long run is
//! `MIAUDIT_FUZZ_CASES=150000 cargo test --release --lib fuzz` (7 targets, 1.05 million cases).
//! Seeds include Microsoft's documented shapes (docs/azure-behaviour.md captures), mutated.
#![cfg(test)]

use crate::arm::{principal_of, versions_in_message};
use crate::azure::Reply;
use crate::azure::transport::{parse_hms, server_delay};
use crate::classify::{judge, tenant_named_by_wrong_tenant_error};
use crate::domain::{
    Answer, Evidence, EvidenceSource, ManagedIdentity, ObjectId, ResourceId, Verdict,
};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("MIAUDIT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Documented shapes to mutate.
const SEEDS: &[&str] = &[
    "/subscriptions/1b877039-0000-0000-0000-000000000000/resourcegroups/kjh-microsoft-learn/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kjh-mi",
    "/subscriptions/fc3ca501-0000-0000-0000-000000000000/resourcegroups/VM/providers/Microsoft.Compute/virtualMachines/VM2",
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/staging",
    "/providers/Microsoft.Management/managementGroups/root/providers/Microsoft.Authorization/policyAssignments/pa",
    "/subscriptions/s/providers/Microsoft.Authorization/policyAssignments/pa",
    "isExplicit=True",
    "isExplicit=False",
    "https://identity.azure.net/ClNzn4fxz/63fEHulvQtfB7agLtUDIkCJSx4OFAC3Tw=",
];

/// A seed with random edits: cut, duplicated segment, inserted characters.
fn mutated() -> impl Strategy<Value = String> {
    (
        0..SEEDS.len(),
        any::<u16>(),
        any::<u16>(),
        "[/a-zA-Z0-9.=_ %-]{0,12}",
    )
        .prop_map(|(i, a, b, ins)| {
            let s = SEEDS[i];
            let n = s.len().max(1);
            let (a, b) = (usize::from(a) % n, usize::from(b) % n);
            let (lo, hi) = (a.min(b), a.max(b));
            let mut out = String::new();
            out.push_str(s.get(..lo).unwrap_or(""));
            out.push_str(&ins);
            out.push_str(s.get(hi..).unwrap_or(""));
            out
        })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), mutated(), "[/A-Za-z.]{0,80}"]
}

fn reply(status: u16, body: Vec<u8>, headers: &[(&str, String)]) -> Reply {
    let mut h = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    Reply {
        status,
        headers: h,
        body: body.into(),
    }
}

/// Numbers as services could send them: huge, negative, fractional, exponent, not a number.
fn extreme_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        Just("99999999999999999999".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("1e308".to_owned()),
        Just("-1e308".to_owned()),
        Just("1e30".to_owned()),
        Just("NaN".to_owned()),
        Just("-0".to_owned()),
        "[0-9]{15,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn resource_ids_parse_without_panic_and_keep_invariants(s in any_text()) {
        if let Some(id) = ResourceId::parse(&s) {
            prop_assert_eq!(id.key(), id.as_str().to_ascii_lowercase());
            prop_assert!(!id.type_path().is_empty());
            prop_assert!(id.namespace().contains('.'));
            let again = ResourceId::parse(id.as_str());
            prop_assert_eq!(again.as_ref(), Some(&id));
            let upper = ResourceId::parse(&id.as_str().to_ascii_uppercase());
            prop_assert_eq!(upper.as_ref(), Some(&id));
        }
    }

    #[test]
    fn alternative_names_never_panic(names in prop::collection::vec(any_text(), 0..5)) {
        let mi = ManagedIdentity::from_alternative_names(&"t".into(), "o".into(), "a".into(), "d".into(), names.clone());
        if let Some(r) = &mi.resource {
            prop_assert!(names.iter().any(|n| ResourceId::parse(n).as_ref() == Some(r)));
        }
    }

    #[test]
    fn the_judge_never_says_orphaned_without_an_authoritative_answer(
        names in prop::collection::vec(any_text(), 0..3),
        status in prop_oneof![Just(200u16), Just(301), Just(307), Just(401), Just(403), Just(404), Just(429), Just(500), any::<u16>()],
        code in prop_oneof![Just(None), Just(Some("ResourceNotFound".to_owned())), Just(Some("InvalidResourceNamespace".to_owned())), Just(Some("InvalidAuthenticationTokenTenant".to_owned())), any::<Option<String>>()],
        message in any::<Option<String>>(),
        present in any::<bool>(),
        principal in prop_oneof![Just(None), Just(Some("o".to_owned())), any::<Option<String>>()],
        latest_version in any::<bool>(),
        row in prop_oneof![Just(None), Just(Some(None)), Just(Some(Some("o".to_owned()))), any::<Option<Option<String>>>()],
        request_id in prop_oneof![Just(None), Just(Some("r".to_owned())), any::<Option<String>>()],
        source in prop_oneof![Just(EvidenceSource::Arm), Just(EvidenceSource::ResourceGraph), Just(EvidenceSource::None)],
        visible in any::<Option<bool>>(),
        elsewhere in prop_oneof![Just(None), any::<Option<String>>()],
    ) {
        let mut all = vec!["isExplicit=False".to_owned(), SEEDS[1].to_owned()];
        all.extend(names);
        let mi = ManagedIdentity::from_alternative_names(&"t".into(), "o".into(), "a".into(), "d".into(), all);
        let answer = if present {
            Answer::Present { principal_id: principal.as_deref().map(ObjectId::new), latest_version }
        } else {
            Answer::Error { status, code, message }
        };
        let ev = Evidence {
            source,
            answer: answer.clone(),
            resource_graph: row.clone().map(|p| crate::domain::GraphRow { principal_id: p.as_deref().map(ObjectId::new) }),
            request_id: request_id.clone(),
            carried_elsewhere: elsewhere.clone(),
            subscription_visible: visible,
            ..Evidence::not_checked()
        };
        let j = judge(&mi, &ev);
        if j.verdict == Verdict::Orphaned {
            prop_assert_eq!(source, EvidenceSource::Arm);
            prop_assert!(elsewhere.is_none(), "orphaned while the principal is in use elsewhere");
            match answer {
                Answer::Present { principal_id: Some(p), .. } => prop_assert!(p != "o"),
                Answer::Present { principal_id: None, latest_version } => {
                    prop_assert!(latest_version, "absent identity without the newest api-version");
                    prop_assert!(row.as_ref().is_some_and(|r| !r.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("o"))), "absent identity without Resource Graph's agreement: {row:?}");
                }
                Answer::Error { status: 404, code, .. } => {
                    prop_assert!(request_id.as_deref().is_some_and(|r| !r.trim().is_empty()), "404 without ARM's request id");
                    let code = code.unwrap_or_default();
                    prop_assert!(["ResourceNotFound", "ResourceGroupNotFound", "NotFound", "ParentResourceNotFound", "PolicyAssignmentNotFound"].iter().any(|c| c.eq_ignore_ascii_case(&code)), "{code}");
                }
                Answer::Error { status: 401, .. } => {
                    prop_assert_eq!(visible, Some(false));
                    prop_assert!(request_id.as_deref().is_some_and(|r| !r.trim().is_empty()), "401 without ARM's request id");
                }
                _ => prop_assert!(false, "orphaned from {answer:?}"),
            }
        }
    }

    #[test]
    fn graph_and_arm_bodies_decode_or_fail_cleanly(body in prop_oneof![
        any::<Vec<u8>>(),
        any_text().prop_map(String::into_bytes),
        (any_text(), any_text()).prop_map(|(a, b)| format!(r#"{{"value":[{{"id":"{a}","alternativeNames":["{b}"]}}],"@odata.nextLink":"{a}"}}"#).into_bytes()),
        any_text().prop_map(|a| format!(r#"{{"error":{{"code":"{a}","message":"{a}"}}}}"#).into_bytes()),
    ]) {
        let r = reply(404, body.clone(), &[]);
        let _ = r.error_body();
        let _ = r.json::<serde_json::Value>(crate::azure::Api::Graph, "x");
        let _ = crate::graph::decode_page_for_fuzz(&body);
    }

    #[test]
    fn resource_graph_rows_never_panic(v in prop_oneof![
        Just(serde_json::json!({"id": "/x", "type": "microsoft.managedidentity/userassignedidentities", "properties": {"principalId": 5}})),
        any_text().prop_map(|t| serde_json::json!({"id": t, "type": t, "identityPrincipalId": t, "identity": {"principalId": [t]}})),
        any::<String>().prop_map(serde_json::Value::String),
    ]) {
        let _ = principal_of(&v);
        let _ = crate::arm::rows_for_fuzz(&v);
        let _ = crate::arm::rows_for_fuzz(&serde_json::json!({"columns": [{"name": "id"}], "rows": [[v.clone()], v]}));
    }

    #[test]
    fn headers_and_messages_parse_without_panic(h in prop_oneof![
        any_text(),
        extreme_number(),
        (extreme_number(), extreme_number(), extreme_number()).prop_map(|(a, b, c)| format!("{a}:{b}:{c}")),
    ], m in any_text()) {
        let r = reply(429, Vec::new(), &[
            ("retry-after", h.clone()),
            ("x-ms-user-quota-resets-after", h.clone()),
            ("retry-after-ms", h.clone()),
            ("x-ms-ratelimit-remaining-subscription-reads", h.clone()),
            ("x-ms-user-quota-remaining", h.clone()),
        ]);
        if let Some(d) = server_delay(&r) {
            prop_assert!(d <= crate::azure::transport::FOREVER);
            // Adding the wait to now never overflows.
            prop_assert!(std::time::Instant::now().checked_add(d).is_some());
        }
        if let Some(q) = crate::azure::transport::quota_remaining(&r) {
            prop_assert!(q >= 0);
        }
        let _ = parse_hms(&h);
        let _ = versions_in_message(&m);
        let _ = tenant_named_by_wrong_tenant_error(&m);
        let _ = crate::config::parse_duration(&h);
    }

    #[test]
    fn token_answers_never_panic(expires in prop_oneof![
        extreme_number(),
        extreme_number().prop_map(|n| format!("\"{n}\"")),
        any_text().prop_map(|t| serde_json::Value::String(t).to_string()),
        Just("null".to_owned()),
        Just("{}".to_owned()),
    ]) {
        let body = format!(r#"{{"access_token":"a","token_type":"Bearer","expires_in":{expires}}}"#);
        if let Some(secs) = crate::azure::auth::lifetime_for_fuzz(body.as_bytes()) {
            prop_assert!(secs <= 86_400);
        }
    }

    #[test]
    fn kql_parser_never_panics(q in prop_oneof![
        any::<String>(),
        "[A-Za-z |=~!()',.]{0,120}",
        Just(crate::arm::identity_query(crate::arm::ArgTable::Resources, &["microsoft.compute/virtualmachines".into()])),
    ]) {
        if let Ok(parsed) = miaudit_sim::kql::parse(&q) {
            let _ = parsed.run(std::iter::once(serde_json::json!({"id": "/a", "type": "t"})));
        }
    }
}
