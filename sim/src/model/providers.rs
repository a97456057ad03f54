//! The resource types and api-versions of the simulated providers API.

use std::collections::BTreeMap;

/// A resource type and its api versions, in the order the providers API lists them.
type TypeVersions = (&'static str, &'static [&'static str]);

/// Each namespace with its resource types and their api versions, as the providers API lists them
/// (previews mixed in; RES-SPEC `GetProvider.json`).
// One line per resource type, as a table reads; rustfmt would spread each version over a line.
#[rustfmt::skip]
const PROVIDERS: &[(&str, &[TypeVersions])] = &[
    ("Microsoft.Compute", &[
        ("virtualMachines", &["2024-07-01", "2024-11-01-preview", "2023-09-01", "2021-03-01"]),
        ("virtualMachineScaleSets", &["2024-07-01", "2023-09-01"]),
    ]),
    ("Microsoft.Web", &[
        ("sites", &["2023-12-01", "2024-04-01", "2022-09-01", "2024-11-01-preview"]),
        ("sites/slots", &["2023-12-01", "2024-04-01", "2022-09-01"]),
    ]),
    ("Microsoft.Storage", &[
        ("storageAccounts", &["2023-05-01", "2023-01-01", "2024-01-01"]),
    ]),
    ("Microsoft.Sql", &[
        ("servers", &["2021-11-01", "2023-08-01", "2024-05-01-preview"]),
    ]),
    ("Microsoft.Logic", &[
        ("workflows", &["2019-05-01", "2016-06-01"]),
    ]),
    ("Microsoft.DataFactory", &[
        ("factories", &["2018-06-01", "2017-09-01-preview"]),
    ]),
    ("Microsoft.HybridCompute", &[
        ("machines", &["2024-07-10", "2022-12-27", "2025-01-13-preview"]),
    ]),
    ("Microsoft.ManagedIdentity", &[
        ("userAssignedIdentities", &["2023-01-31", "2024-11-30", "2025-01-31-preview"]),
        ("identities", &["2023-01-31", "2024-11-30"]),
    ]),
    ("Microsoft.Authorization", &[
        ("policyAssignments", &["2022-06-01", "2023-04-01", "2024-04-01", "2025-01-01-preview"]),
    ]),
    ("Microsoft.Automation", &[
        ("automationAccounts", &["2023-11-01", "2024-10-23"]),
    ]),
];

/// Resource types the simulated providers API knows, with api versions as the providers API lists
/// them (previews mixed in; RES-SPEC `GetProvider.json`).
pub fn default_providers() -> BTreeMap<String, Vec<(String, Vec<String>)>> {
    PROVIDERS
        .iter()
        .map(|(namespace, types)| {
            let types = types
                .iter()
                .map(|(t, versions)| {
                    let versions = versions.iter().map(|v| (*v).to_owned()).collect();
                    ((*t).to_owned(), versions)
                })
                .collect();
            ((*namespace).to_owned(), types)
        })
        .collect()
}
