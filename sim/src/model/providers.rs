//! The resource types and api-versions of the simulated providers API.

use std::collections::BTreeMap;

/// Resource types the simulated providers API knows, with api versions as the providers API lists
/// them (previews mixed in; RES-SPEC `GetProvider.json`).
pub fn default_providers() -> BTreeMap<String, Vec<(String, Vec<String>)>> {
    let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut m = BTreeMap::new();
    m.insert(
        "Microsoft.Compute".to_owned(),
        vec![
            (
                "virtualMachines".to_owned(),
                v(&[
                    "2024-07-01",
                    "2024-11-01-preview",
                    "2023-09-01",
                    "2021-03-01",
                ]),
            ),
            (
                "virtualMachineScaleSets".to_owned(),
                v(&["2024-07-01", "2023-09-01"]),
            ),
        ],
    );
    m.insert(
        "Microsoft.Web".to_owned(),
        vec![
            (
                "sites".to_owned(),
                v(&[
                    "2023-12-01",
                    "2024-04-01",
                    "2022-09-01",
                    "2024-11-01-preview",
                ]),
            ),
            (
                "sites/slots".to_owned(),
                v(&["2023-12-01", "2024-04-01", "2022-09-01"]),
            ),
        ],
    );
    m.insert(
        "Microsoft.Storage".to_owned(),
        vec![(
            "storageAccounts".to_owned(),
            v(&["2023-05-01", "2023-01-01", "2024-01-01"]),
        )],
    );
    m.insert(
        "Microsoft.Sql".to_owned(),
        vec![(
            "servers".to_owned(),
            v(&["2021-11-01", "2023-08-01", "2024-05-01-preview"]),
        )],
    );
    m.insert(
        "Microsoft.Logic".to_owned(),
        vec![("workflows".to_owned(), v(&["2019-05-01", "2016-06-01"]))],
    );
    m.insert(
        "Microsoft.DataFactory".to_owned(),
        vec![(
            "factories".to_owned(),
            v(&["2018-06-01", "2017-09-01-preview"]),
        )],
    );
    m.insert(
        "Microsoft.HybridCompute".to_owned(),
        vec![(
            "machines".to_owned(),
            v(&["2024-07-10", "2022-12-27", "2025-01-13-preview"]),
        )],
    );
    m.insert(
        "Microsoft.ManagedIdentity".to_owned(),
        vec![
            (
                "userAssignedIdentities".to_owned(),
                v(&["2023-01-31", "2024-11-30", "2025-01-31-preview"]),
            ),
            ("identities".to_owned(), v(&["2023-01-31", "2024-11-30"])),
        ],
    );
    m.insert(
        "Microsoft.Authorization".to_owned(),
        vec![(
            "policyAssignments".to_owned(),
            v(&[
                "2022-06-01",
                "2023-04-01",
                "2024-04-01",
                "2025-01-01-preview",
            ]),
        )],
    );
    m.insert(
        "Microsoft.Automation".to_owned(),
        vec![(
            "automationAccounts".to_owned(),
            v(&["2023-11-01", "2024-10-23"]),
        )],
    );
    m
}
