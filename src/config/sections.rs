//! One reader per section of the configuration, each adding its problems to the reader's list.

use super::read::{Reader, check_endpoint, is_tenant_id};
use super::*;

/// `[azure]`: the cloud and its endpoints (with overrides), checked as URLs into `url_errors`.
pub(super) fn read_azure(
    r: &mut Reader<'_>,
    env: &Env,
    url_errors: &mut Vec<String>,
) -> AzureSettings {
    // [azure]
    let cloud = match r.string("azure", "cloud").as_deref() {
        // Unset: the cloud AZURE_AUTHORITY_HOST names (AKS sets it), else the public one.
        None => env
            .get("AZURE_AUTHORITY_HOST")
            .and_then(|h| Cloud::of_url(h))
            .unwrap_or(Cloud::Public),
        Some("public") => Cloud::Public,
        Some("usgovernment") => Cloud::UsGovernment,
        Some("china") => Cloud::China,
        Some(other) => {
            r.errors.push(format!(
                "azure.cloud: {other:?} is not one of public, usgovernment, china"
            ));
            Cloud::Public
        }
    };
    let (d_auth, d_graph, d_arm) = cloud.endpoints();
    let authority = r
        .string("azure", "authority_host")
        .or_else(|| env.get("AZURE_AUTHORITY_HOST").cloned())
        .unwrap_or_else(|| d_auth.to_owned());
    let graph = r
        .string("azure", "graph_endpoint")
        .unwrap_or_else(|| d_graph.to_owned());
    let arm = r
        .string("azure", "arm_endpoint")
        .unwrap_or_else(|| d_arm.to_owned());
    let graph_scope = r
        .string("azure", "graph_scope")
        .unwrap_or_else(|| format!("{d_graph}/.default"));
    let arm_scope = r
        .string("azure", "arm_scope")
        .unwrap_or_else(|| format!("{d_arm}/.default"));
    // A token is good for one cloud only (G-NAT): never send one cloud's token to another's endpoint.
    let known = [
        ("azure.authority_host", authority.as_str()),
        ("azure.graph_endpoint", graph.as_str()),
        ("azure.arm_endpoint", arm.as_str()),
        ("azure.graph_scope", graph_scope.as_str()),
        ("azure.arm_scope", arm_scope.as_str()),
    ];
    for (key, value) in known {
        if let Some(other) = Cloud::of_url(value).filter(|c| *c != cloud) {
            r.errors.push(format!(
                "{key}: {value:?} belongs to the {} cloud, but azure.cloud is {}: tokens of one cloud are not sent to another's endpoints (set azure.cloud = \"{}\", or leave the endpoints to it)",
                other.as_str(),
                cloud.as_str(),
                other.as_str()
            ));
        }
    }
    AzureSettings {
        cloud,
        authority_host: check_endpoint("azure.authority_host", &authority, url_errors),
        graph_endpoint: check_endpoint("azure.graph_endpoint", &graph, url_errors),
        arm_endpoint: check_endpoint("azure.arm_endpoint", &arm, url_errors),
        graph_scope,
        arm_scope,
    }
}

/// `[[tenants]]` (or `AZURE_TENANT_ID` when none is listed), each once.
pub(super) fn read_tenants(
    r: &mut Reader<'_>,
    env: &Env,
    secrets: &mut Vec<String>,
    azure_cloud: Cloud,
) -> Vec<TenantSettings> {
    // Each with where it was configured (for error messages).
    let mut tenants: Vec<(String, TenantSettings)> = Vec::new();
    if let Some(items) = r.root.get("tenants").and_then(toml::Value::as_array) {
        for (n, t) in items.iter().enumerate() {
            let Some(t) = t.as_table() else { continue };
            match t.get("id").and_then(toml::Value::as_str) {
                Some(id) if is_tenant_id(id) => {
                    let auth = t.get("auth").map(|a| {
                        // The tenant's own table, read as `[auth]` is, its problems named after it.
                        let root = toml::Table::from_iter([("auth".to_owned(), a.clone())]);
                        let mut own = Reader {
                            root: &root,
                            errors: Vec::new(),
                        };
                        // Whole: the table alone, not the process's AZURE_* variables (they are
                        // [auth]'s), so no other app's secret is sent for this tenant's app.
                        let settings = super::auth::read_auth(
                            &mut own,
                            &Env::new(),
                            secrets,
                            &format!("tenants[{n}].auth"),
                        );
                        r.errors.extend(own.errors);
                        settings
                    });
                    // A tenant in another cloud than [azure]'s: that cloud's own endpoints.
                    let azure = match t
                        .get("cloud")
                        .map(|c| (c, c.as_str().and_then(Cloud::parse)))
                    {
                        None => None,
                        Some((_, Some(c))) if c == azure_cloud => None,
                        Some((_, Some(c))) => Some(c.settings()),
                        Some((c, None)) => {
                            r.errors.push(format!(
                                "tenants[{n}].cloud: {c} is not one of public, usgovernment, china"
                            ));
                            None
                        }
                    };
                    tenants.push((
                        format!("tenants[{n}]"),
                        TenantSettings {
                            id: TenantId::new(id),
                            name: t
                                .get("name")
                                .and_then(toml::Value::as_str)
                                .map(str::to_owned),
                            auth,
                            azure,
                        },
                    ));
                }
                Some(id) => r.errors.push(format!(
                    "tenants[{n}].id: {id:?} is not a tenant id (a GUID or a domain name)"
                )),
                None => r.errors.push(format!("tenants[{n}].id: missing")),
            }
        }
    }
    if tenants.is_empty()
        && let Some(id) = env.get("AZURE_TENANT_ID").filter(|s| !s.trim().is_empty())
    {
        if is_tenant_id(id) {
            tenants.push((
                "AZURE_TENANT_ID".into(),
                TenantSettings {
                    id: TenantId::new(id),
                    name: None,
                    auth: None,
                    azure: None,
                },
            ));
        } else {
            r.errors
                .push(format!("AZURE_TENANT_ID: {id:?} is not a tenant id"));
        }
    }
    // The same tenant twice would be scanned twice into one scan (the store refuses that): checked
    // on the final list, ids already trimmed and lower-cased.
    for (i, (at, t)) in tenants.iter().enumerate() {
        if let Some((first, _)) = tenants[..i].iter().find(|(_, o)| o.id == t.id) {
            r.errors.push(format!(
                "{at}.id: {:?} is the same tenant as {first}.id (tenant ids compare case-insensitively); list each tenant once",
                t.id
            ));
        }
    }
    tenants.into_iter().map(|(_, t)| t).collect()
}

/// `[database]`.
pub(super) fn read_database(r: &mut Reader<'_>) -> DatabaseSettings {
    // [database]
    let db_url = r
        .string("database", "url")
        .unwrap_or_else(|| "sqlite://miaudit.db".into());
    if !db_url.starts_with("sqlite:") {
        r.errors.push(format!(
            "database.url: {db_url:?} must be a sqlite: URL such as \"sqlite://miaudit.db\""
        ));
    }

    let retain_scans = r
        .int("database", "retain_scans", 1, 100_000)
        .map_or(DEFAULT_RETAIN_SCANS, |n| {
            u32::try_from(n).unwrap_or(DEFAULT_RETAIN_SCANS)
        });

    DatabaseSettings {
        url: db_url,
        retain_scans,
    }
}

/// `[http]`: where to listen, the API token and what it guards.
pub(super) fn read_http(r: &mut Reader<'_>, secrets: &mut Vec<String>) -> HttpSettings {
    // [http]
    let listen = r
        .string("http", "listen")
        .unwrap_or_else(|| "127.0.0.1:9464".into());
    let listen = listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        r.errors.push(format!(
            "http.listen: {listen:?} is not an address such as \"127.0.0.1:9464\""
        ));
        SocketAddr::from(([127, 0, 0, 1], 9464))
    });
    // The token inline, or from a file (a mounted Kubernetes Secret, a systemd credential), so it
    // need not sit in the environment where `docker inspect` and /proc/<pid>/environ show it.
    let inline = r.string("http", "api_token");
    let file = r.string("http", "api_token_file");
    if inline.is_some() && file.is_some() {
        r.errors
            .push("http.api_token_file: set either api_token or api_token_file, not both".into());
    }
    let from_file = file.and_then(|f| match std::fs::read_to_string(&f) {
        Ok(s) => {
            let s = s.trim_end_matches(['\r', '\n']).to_owned();
            secrets.push(s.clone());
            Some(s)
        }
        Err(e) => {
            r.errors.push(format!(
                "http.api_token_file: cannot read the file it names: {e}"
            ));
            None
        }
    });
    let api_token = inline
        .or(from_file)
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    let require_token_for_reads = r
        .boolean("http", "require_token_for_reads")
        .unwrap_or(false);
    let metrics_require_token = r.boolean("http", "metrics_require_token").unwrap_or(false);
    for (key, on) in [
        ("require_token_for_reads", require_token_for_reads),
        ("metrics_require_token", metrics_require_token),
    ] {
        if on && api_token.is_none() {
            r.errors.push(format!(
                "http.{key}: needs a token to require: set http.api_token, http.api_token_file (or MIAUDIT_HTTP__API_TOKEN)"
            ));
        }
    }

    HttpSettings {
        listen,
        api_token,
        require_token_for_reads,
        metrics_require_token,
    }
}

/// `[schedule]`.
pub(super) fn read_schedule(r: &mut Reader<'_>) -> ScheduleSettings {
    // [schedule]
    let cron = r
        .string("schedule", "cron")
        .unwrap_or_else(|| "0 */30 * * * *".into());
    let fields = cron.split_whitespace().count();
    if !(cron.trim_start().starts_with('@') || fields == 6 || fields == 7) {
        r.errors.push(format!(
            "schedule.cron: {cron:?} needs 6 or 7 fields, seconds first (e.g. \"0 */30 * * * *\")"
        ));
    }
    let scan_on_start = r.boolean("schedule", "scan_on_start").unwrap_or(true);

    ScheduleSettings {
        cron,
        scan_on_start,
    }
}

/// `[lifecycle]`.
pub(super) fn read_lifecycle(r: &mut Reader<'_>) -> LifecycleSettings {
    // [lifecycle]
    let confirm_after = r
        .duration("lifecycle", "confirm_after")
        .unwrap_or(Duration::from_secs(7200));

    LifecycleSettings { confirm_after }
}

/// `[scan]`: concurrency, timeouts, retries and the limits on what a server can make a scan do.
pub(super) fn read_scan(r: &mut Reader<'_>) -> ScanSettings {
    // [scan]
    let concurrency = r.int("scan", "concurrency", 1, 256).unwrap_or(8);
    let max_concurrent_tenants = r
        .int("scan", "max_concurrent_tenants", 1, 64)
        .unwrap_or(DEFAULT_CONCURRENT_TENANTS as i64);
    let request_timeout = r
        .duration("scan", "request_timeout")
        .unwrap_or(Duration::from_secs(30));
    if request_timeout.is_zero() {
        r.errors
            .push("scan.request_timeout: must be more than 0s".into());
    }
    let max_retries = r.int("scan", "max_retries", 0, 20).unwrap_or(5);
    let retry_base_delay = r
        .duration("scan", "retry_base_delay")
        .unwrap_or(Duration::from_millis(500));
    let retry_max_delay = r
        .duration("scan", "retry_max_delay")
        .unwrap_or(Duration::from_secs(30));

    let scan_timeout = r
        .duration("scan", "timeout")
        .unwrap_or(Duration::from_secs(3600));
    if scan_timeout.is_zero() {
        r.errors.push("scan.timeout: must be more than 0s".into());
    }

    let graph_delta = r.boolean("scan", "graph_delta").unwrap_or(false);
    let max_response_bytes = r
        .size(
            "scan",
            "max_response_bytes",
            MIN_MAX_RESPONSE_BYTES,
            MAX_MAX_RESPONSE_BYTES,
        )
        .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
    let max_server_wait = r
        .duration("scan", "max_server_wait")
        .unwrap_or(Duration::from_secs(300));

    ScanSettings {
        concurrency: usize::try_from(concurrency).unwrap_or(8),
        max_concurrent_tenants: usize::try_from(max_concurrent_tenants)
            .unwrap_or(DEFAULT_CONCURRENT_TENANTS),
        request_timeout,
        max_retries: u32::try_from(max_retries).unwrap_or(5),
        retry_base_delay,
        retry_max_delay,
        timeout: scan_timeout,
        graph_delta,
        max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
        max_server_wait,
    }
}

/// `[log]`.
pub(super) fn read_log(r: &mut Reader<'_>) -> LogSettings {
    // [log]
    let level = r.string("log", "level").unwrap_or_else(|| "info".into());
    let json = match r.string("log", "format").as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            r.errors
                .push(format!("log.format: {other:?} is not one of text, json"));
            false
        }
    };

    LogSettings { level, json }
}
