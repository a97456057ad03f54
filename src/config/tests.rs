//! Loading configuration: every problem at once, secrets never printed, overrides and defaults.

use super::*;
use std::io::Write;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    for bad in ["", "2", "h", "2x", "-1s", "1.5h"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn defaults_follow_the_public_cloud() {
    let s = Settings::load(None, &Env::new()).expect("defaults are valid");
    assert_eq!(s.azure.graph_endpoint, "https://graph.microsoft.com");
    assert_eq!(s.azure.arm_scope, "https://management.azure.com/.default");
    assert_eq!(s.lifecycle.confirm_after, Duration::from_secs(7200));
    assert!(s.check_scan_ready().is_err());
}

#[test]
fn endpoint_overrides_keep_cloud_scopes() {
    let f = file("[azure]\ncloud = \"usgovernment\"\ngraph_endpoint = \"http://127.0.0.1:8080\"\n");
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    assert_eq!(s.azure.graph_endpoint, "http://127.0.0.1:8080");
    assert_eq!(s.azure.graph_scope, "https://graph.microsoft.us/.default");
    assert_eq!(s.azure.authority_host, "https://login.microsoftonline.us");
}

#[test]
fn every_problem_is_reported_at_once_naming_the_key() {
    let f = file(
        "[azure]\ncloud = \"mars\"\narm_endpoint = \"http://example.com\"\nbogus = 1\n[scan]\nconcurrency = 0\n[lifecycle]\nconfirm_after = \"soon\"\n[extra]\nx = 1\n",
    );
    let err =
        Settings::load(Some(f.path()), &env(&[("MIAUDIT_HTTP__NOPE", "1")])).expect_err("invalid");
    let text = err.0.join("\n");
    for key in [
        "azure.cloud",
        "azure.arm_endpoint",
        "azure.bogus",
        "scan.concurrency",
        "lifecycle.confirm_after",
        "extra",
        "MIAUDIT_HTTP__NOPE",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    assert_eq!(err.0.len(), 7, "{text}");
}

#[test]
fn environment_overrides_the_file_and_sdk_variables_fill_gaps() {
    let f = file("[database]\nurl = \"sqlite://a.db\"\n[auth]\nclient_id = \"from-file\"\n");
    let s = Settings::load(
        Some(f.path()),
        &env(&[
            ("MIAUDIT_DATABASE__URL", "sqlite://b.db"),
            ("MIAUDIT_SCHEDULE__SCAN_ON_START", "false"),
            ("AZURE_CLIENT_ID", "from-env"),
            ("AZURE_CLIENT_SECRET", "s3cret"),
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000aa"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.database.url, "sqlite://b.db");
    assert!(!s.schedule.scan_on_start);
    assert_eq!(s.auth.client_id.as_deref(), Some("from-file"));
    assert_eq!(s.tenants[0].id, "00000000-0000-0000-0000-0000000000aa");
    assert!(s.check_scan_ready().is_ok());
    assert!(!format!("{s:?}").contains("s3cret"));
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let secret = file("abc\n");
    let f = file(&format!(
        "[auth]\nclient_secret_file = {:?}\n",
        secret.path().display().to_string()
    ));
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    assert_eq!(
        s.auth.client_secret.as_ref().map(Secret::expose),
        Some("abc")
    );
}

#[test]
fn the_api_token_is_read_from_a_file_and_never_shown() {
    let token = file("s3cret-api-t0ken\n");
    let f = file(&format!(
        "[http]\napi_token_file = {:?}\nrequire_token_for_reads = true\n",
        token.path().display().to_string()
    ));
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    assert_eq!(
        s.http.api_token.as_ref().map(Secret::expose),
        Some("s3cret-api-t0ken")
    );
    let both = file(&format!(
        "[http]\napi_token = \"x\"\napi_token_file = {:?}\n",
        token.path().display().to_string()
    ));
    let err = Settings::load(Some(both.path()), &Env::new()).expect_err("refused");
    assert!(err.0.iter().any(|e| e.contains("not both")), "{err}");
    let missing = file("[http]\napi_token_file = \"/nonexistent/token\"\n");
    let err = Settings::load(Some(missing.path()), &Env::new()).expect_err("refused");
    assert!(
        err.0[0].starts_with("http.api_token_file: cannot read"),
        "{err}"
    );
}

#[test]
fn an_unknown_auth_method_is_refused_naming_the_known_ones() {
    let f = file("[auth]\nmethod = \"password\"\n");
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("refused");
    assert!(err.0[0].starts_with("auth.method"), "{err}");
    assert!(
        err.0[0].contains("workload_identity, managed_identity, azure_cli"),
        "{err}"
    );
}

const TENANT_LINE: &str = "[[tenants]]\nid = \"00000000-0000-0000-0000-000000000001\"\n";

#[test]
fn without_a_method_the_choice_is_automatic_and_needs_nothing_up_front() {
    let f = file(TENANT_LINE);
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    assert_eq!(s.auth.method, AuthMethod::Auto);
    assert!(s.check_scan_ready().is_ok());
    assert_eq!(s.auth.managed_identity.imds(), Some(DEFAULT_IMDS));
}

#[test]
fn each_method_says_what_it_lacks() {
    for (method, lacks) in [
        ("client_secret", "auth.client_secret: missing"),
        ("client_certificate", "auth.certificate_path: missing"),
        ("workload_identity", "auth.federated_token_file: missing"),
    ] {
        let f = file(&format!(
            "[auth]\nmethod = \"{method}\"\nclient_id = \"c\"\n{TENANT_LINE}"
        ));
        let s = Settings::load(Some(f.path()), &Env::new()).expect("valid file");
        let err = s.check_scan_ready().expect_err(method);
        assert!(
            err.0.iter().any(|e| e.starts_with(lacks)),
            "{method}: {err}"
        );
    }
    for method in ["managed_identity", "azure_cli"] {
        let f = file(&format!("[auth]\nmethod = \"{method}\"\n{TENANT_LINE}"));
        let s = Settings::load(Some(f.path()), &Env::new()).expect("valid file");
        assert!(s.check_scan_ready().is_ok(), "{method}");
    }
}

#[test]
fn the_sdk_variables_fill_what_the_file_leaves_unset() {
    let env: Env = [
        ("AZURE_CLIENT_ID", "cid"),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            "/var/run/secrets/azure/tokens/azure-identity-token",
        ),
        (
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            "http://127.0.0.1:8080/",
        ),
        ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let f = file("[auth]\nmethod = \"workload_identity\"\n");
    let s = Settings::load(Some(f.path()), &env).expect("valid");
    assert_eq!(s.auth.client_id.as_deref(), Some("cid"));
    assert_eq!(
        s.auth.federated_token_file.as_deref(),
        Some(std::path::Path::new(
            "/var/run/secrets/azure/tokens/azure-identity-token"
        ))
    );
    assert_eq!(
        s.auth.managed_identity.imds(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(s.azure.authority_host, "https://login.microsoftonline.us");
    // ... and the cloud it names, when the file names none.
    assert_eq!(s.azure.cloud, Cloud::UsGovernment);
    assert_eq!(s.azure.graph_endpoint, "https://graph.microsoft.us");
    // The file's authority host wins over the variable.
    let f =
        file("[azure]\ncloud = \"china\"\nauthority_host = \"https://login.chinacloudapi.cn\"\n");
    let s = Settings::load(Some(f.path()), &env).expect("valid");
    assert_eq!(s.azure.authority_host, "https://login.chinacloudapi.cn");
}

#[test]
fn app_service_variables_choose_its_endpoint_and_its_header_is_a_secret() {
    let env: Env = [
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"),
        ("IDENTITY_HEADER", "header-secret-value"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let f = file(
        "[auth]\nmethod = \"managed_identity\"\nobject_id = \"oid\"\nbogus = \"header-secret-value\"\n",
    );
    let err = Settings::load(Some(f.path()), &env).expect_err("unknown key");
    assert!(!err.to_string().contains("header-secret-value"), "{err}");
    let f = file("[auth]\nmethod = \"managed_identity\"\nobject_id = \"oid\"\n");
    let s = Settings::load(Some(f.path()), &env).expect("valid");
    assert!(matches!(
        &s.auth.managed_identity,
        ManagedIdentitySource::AppService { endpoint, .. } if endpoint == "http://127.0.0.1:41741/msi/token"
    ));
    assert_eq!(
        s.auth.managed_identity_id,
        ManagedIdentityId::ObjectId("oid".into())
    );
    assert!(!format!("{:?}", s.auth).contains("header-secret-value"));
}

#[test]
fn a_tenant_may_bring_its_own_credential() {
    let f = file(
        "[auth]\nclient_id = \"shared\"\nclient_secret = \"shared-secret\"\n\
         [[tenants]]\nid = \"00000000-0000-0000-0000-000000000001\"\n\
         [[tenants]]\nid = \"00000000-0000-0000-0000-000000000002\"\n\
         [tenants.auth]\nmethod = \"azure_cli\"\n",
    );
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    assert!(s.tenants[0].auth.is_none());
    assert_eq!(s.auth_for(&s.tenants[0].id).method, AuthMethod::Auto);
    assert_eq!(s.auth_for(&s.tenants[1].id).method, AuthMethod::AzureCli);
    let f = file(
        "[[tenants]]\nid = \"00000000-0000-0000-0000-000000000002\"\n\
         [tenants.auth]\nmethod = \"client_secret\"\nclient_secret = \"tenant-secret-1\"\nclent_id = \"x\"\n",
    );
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("typo");
    assert!(
        err.0
            .iter()
            .any(|e| e == "tenants[0].auth.clent_id: unknown key"),
        "{err}"
    );
    let f = file(
        "[[tenants]]\nid = \"00000000-0000-0000-0000-000000000002\"\n\
         [tenants.auth]\nmethod = \"client_secret\"\nclient_secret = \"tenant-secret-1\"\n",
    );
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    let err = s.check_scan_ready().expect_err("no client id");
    assert!(
        err.0
            .iter()
            .any(|e| e.starts_with("tenants[0].auth.client_id: missing")),
        "{err}"
    );
    assert!(!format!("{err} {:?}", s.tenants).contains("tenant-secret-1"));
}

#[test]
fn a_certificate_file_is_checked_when_the_configuration_is_read() {
    let dir = tempfile::tempdir().expect("dir");
    let not_pem = dir.path().join("cert.pfx");
    std::fs::write(&not_pem, [0x30u8, 0x82, 0x01]).expect("file");
    let f = file(&format!(
        "[auth]\nmethod = \"client_certificate\"\ncertificate_path = \"{}\"\n",
        not_pem.display()
    ));
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("not PEM");
    assert!(
        err.0[0].starts_with("auth.certificate_path:") && err.0[0].contains("PKCS#12"),
        "{err}"
    );
}

#[test]
fn a_tenant_listed_twice_is_an_error_naming_both_positions() {
    let f = file(
        "[[tenants]]\nid = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n\
         [[tenants]]\nid = \"contoso.onmicrosoft.com\"\n\
         [[tenants]]\nid = \" 72F988BF-86F1-41AF-91AB-2D7CD011DB47 \"\nname = \"again\"\n",
    );
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("duplicate");
    assert_eq!(err.0.len(), 1, "{:?}", err.0);
    let line = &err.0[0];
    assert!(
        line.starts_with("tenants[2].id:")
            && line.contains("tenants[0].id")
            && line.contains("72f988bf-86f1-41af-91ab-2d7cd011db47"),
        "{line}"
    );
    // Distinct tenants pass, with ids trimmed and lower-cased.
    let f = file(
        "[[tenants]]\nid = \" 72F988BF-86F1-41AF-91AB-2D7CD011DB47\"\n[[tenants]]\nid = \"Contoso.onmicrosoft.com\"\n",
    );
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    assert_eq!(
        s.tenant_ids(),
        [
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "contoso.onmicrosoft.com"
        ]
    );
}

#[test]
fn azure_tenant_id_fills_in_only_an_empty_list_so_it_never_duplicates() {
    let id = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let f = file(&format!("[[tenants]]\nid = \"{id}\"\n"));
    let s = Settings::load(
        Some(f.path()),
        &env(&[("AZURE_TENANT_ID", &id.to_ascii_uppercase())]),
    )
    .expect("valid");
    assert_eq!(s.tenant_ids(), [id]);
    let s = Settings::load(None, &env(&[("AZURE_TENANT_ID", &id.to_ascii_uppercase())]))
        .expect("valid");
    assert_eq!(s.tenant_ids(), [id]);
}

#[test]
fn a_syntax_error_on_a_secret_line_gives_line_and_column_but_never_the_line() {
    for (text, secret, line) in [
        // An unterminated string: the error is on the secret's own line.
        (
            "[auth]\nclient_id = \"c\"\nclient_secret = \"Sup3r-S3cret-Value\n",
            "Sup3r-S3cret-Value",
            3,
        ),
        // A bare (unquoted) value.
        (
            "[http]\napi_token = t0ken-without-quotes\n",
            "t0ken-without-quotes",
            2,
        ),
        // Dotted key at the top level, a stray character after the value.
        (
            "auth.client_secret = \"dotted-s3cret\" x\n",
            "dotted-s3cret",
            1,
        ),
    ] {
        let f = file(text);
        let err = Settings::load(Some(f.path()), &Env::new()).expect_err("syntax error");
        assert_eq!(err.0.len(), 1, "{:?}", err.0);
        let msg = &err.0[0];
        assert!(
            msg.contains(&format!("line {line}, column")),
            "{msg} (for {text:?})"
        );
        assert!(!msg.contains(secret), "{msg}");
        assert!(!err.to_string().contains(secret));
    }
}

#[test]
fn secrets_never_print() {
    let s = Secret::new("hunter2".into());
    assert!(!format!("{s:?}").contains("hunter2"));
    assert_eq!(s.expose(), "hunter2");
}

#[test]
fn settings_from_text_in_memory_are_checked_like_a_file() {
    let s = Settings::from_toml_str(
        "[[tenants]]\nid = \"00000000-0000-0000-0000-0000000000aa\"\n[scan]\nconcurrency = 3\n",
        &env(&[]),
    )
    .expect("valid");
    assert_eq!(s.scan.concurrency, 3);
    let e = Settings::from_toml_str("[scan]\nconcurency = 3\n", &env(&[])).expect_err("typo");
    assert!(e.to_string().contains("scan.concurency"), "{e}");
}

#[test]
fn values_of_secret_like_keys_are_never_echoed() {
    let f = file(
        "[http]\nrequire_token_for_reads = \"tok-3f9a8b7c6d5e\"\nmetrics_require_token = 17\n[auth]\nclient_secret_file = \"Xy8Q~s3cretValue.ABCdef_123\"\n",
    );
    let env = env(&[("MIAUDIT_HTTP__API_TOKEN", "")]);
    let e = Settings::load(Some(f.path()), &env).expect_err("invalid");
    let text = e.to_string();
    for secret in ["tok-3f9a8b7c6d5e", "Xy8Q~s3cretValue", "17"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("http.require_token_for_reads"), "{text}");
    assert!(text.contains("auth.client_secret_file"), "{text}");
}

#[test]
fn a_secret_pasted_into_another_key_is_redacted_from_the_error() {
    let e = env(&[
        ("MIAUDIT_AUTH__CLIENT_SECRET", "env-s3cret-value"),
        ("MIAUDIT_SCAN__CONCURRENCY", "env-s3cret-value"),
        ("AZURE_CLIENT_SECRET", "azure-s3cret"),
        ("MIAUDIT_HTTP__LISTEN", "azure-s3cret"),
    ]);
    let f =
        file("[http]\napi_token = \"file-t0ken\"\n[lifecycle]\nconfirm_after = \"file-t0ken\"\n");
    let err = Settings::load(Some(f.path()), &e).expect_err("invalid");
    let text = err.0.join("\n");
    for key in ["scan.concurrency", "http.listen", "lifecycle.confirm_after"] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    for secret in ["env-s3cret-value", "azure-s3cret", "file-t0ken"] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
    assert!(text.contains("<redacted>"), "{text}");
}

#[test]
fn line_and_column_count_characters_from_one() {
    assert_eq!(line_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("é\nx", 3), (2, 1));
    assert_eq!(line_column("ab", 99), (1, 3));
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("65536"), Some(65_536));
    assert_eq!(parse_size("64KiB"), Some(65_536));
    assert_eq!(parse_size("32 mib"), Some(32 << 20));
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("16MB"), Some(16_000_000));
    for bad in [
        "",
        "MiB",
        "1.5MiB",
        "-1",
        "12 parsecs",
        "99999999999999999999GiB",
    ] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn response_size_cap_and_server_wait_have_defaults_bounds_and_overrides() {
    let s = Settings::load(None, &Env::new()).expect("defaults");
    assert_eq!(s.scan.max_response_bytes, 32 * 1024 * 1024);
    assert_eq!(s.scan.max_server_wait, Duration::from_secs(300));

    let f = file("[scan]\nmax_response_bytes = \"16MiB\"\nmax_server_wait = \"90s\"\n");
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    assert_eq!(s.scan.max_response_bytes, 16 << 20);
    assert_eq!(s.scan.max_server_wait, Duration::from_secs(90));

    let f = file("[scan]\nmax_response_bytes = 65536\n");
    let s = Settings::load(
        Some(f.path()),
        &env(&[
            ("MIAUDIT_SCAN__MAX_RESPONSE_BYTES", "1048576"),
            ("MIAUDIT_SCAN__MAX_SERVER_WAIT", "0s"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.scan.max_response_bytes, 1 << 20, "the environment wins");
    assert_eq!(s.scan.max_server_wait, Duration::ZERO);

    for (text, key) in [
        ("max_response_bytes = 65535", "scan.max_response_bytes"),
        ("max_response_bytes = \"2GiB\"", "scan.max_response_bytes"),
        ("max_response_bytes = -1", "scan.max_response_bytes"),
        ("max_response_bytes = \"lots\"", "scan.max_response_bytes"),
        ("max_server_wait = \"forever\"", "scan.max_server_wait"),
        ("max_server_wait = -5", "scan.max_server_wait"),
    ] {
        let f = file(&format!("[scan]\n{text}\n"));
        let err = Settings::load(Some(f.path()), &Env::new()).expect_err(text);
        assert_eq!(err.0.len(), 1, "{text}: {:?}", err.0);
        assert!(err.0[0].starts_with(key), "{text}: {}", err.0[0]);
    }
    let f = file("[scan]\nmax_response_bytes = 1\n");
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("too small");
    assert!(err.0[0].contains("from 64KiB to 1GiB"), "{}", err.0[0]);
}

#[test]
fn the_example_configuration_is_valid_and_states_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/miaudit.example.toml");
    let example = Settings::load(Some(&path), &Env::new()).expect("the example loads");
    let defaults = Settings::load(None, &Env::new()).expect("defaults");
    assert_eq!(
        format!("{:?}", example.scan),
        format!("{:?}", defaults.scan)
    );
    assert_eq!(
        format!("{:?}", example.http),
        format!("{:?}", defaults.http)
    );
    assert_eq!(format!("{:?}", example.log), format!("{:?}", defaults.log));
    assert_eq!(
        example.database.retain_scans,
        defaults.database.retain_scans
    );
}

#[test]
fn retained_scans_are_a_whole_number_from_one() {
    let s = Settings::load(None, &Env::new()).expect("defaults");
    assert_eq!(s.database.retain_scans, DEFAULT_RETAIN_SCANS);
    let f = file("[database]\nretain_scans = 3\n");
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    assert_eq!(s.database.retain_scans, 3);
    let s = Settings::load(
        Some(f.path()),
        &env(&[("MIAUDIT_DATABASE__RETAIN_SCANS", "500")]),
    )
    .expect("valid");
    assert_eq!(s.database.retain_scans, 500, "the environment wins");
    for bad in ["0", "-1", "\"many\""] {
        let f = file(&format!("[database]\nretain_scans = {bad}\n"));
        let e = Settings::load(Some(f.path()), &Env::new()).expect_err(bad);
        assert!(e.to_string().contains("database.retain_scans"), "{e}");
    }
}

#[test]
fn requiring_the_token_needs_one_configured() {
    let s = Settings::load(None, &Env::new()).expect("defaults");
    assert!(!s.http.require_token_for_reads && !s.http.metrics_require_token);
    let f = file("[http]\nrequire_token_for_reads = true\nmetrics_require_token = \"true\"\n");
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("no token");
    assert_eq!(err.0.len(), 2, "{:?}", err.0);
    assert!(err.0[0].starts_with("http.require_token_for_reads: needs"));
    assert!(err.0[1].starts_with("http.metrics_require_token: needs"));
    // The token from the environment counts.
    let s = Settings::load(
        Some(f.path()),
        &env(&[("MIAUDIT_HTTP__API_TOKEN", "tok3n-from-env")]),
    )
    .expect("valid");
    assert!(s.http.require_token_for_reads && s.http.metrics_require_token);
    let s = Settings::load(
        None,
        &env(&[
            ("MIAUDIT_HTTP__API_TOKEN", "tok3n-from-env"),
            ("MIAUDIT_HTTP__REQUIRE_TOKEN_FOR_READS", "true"),
        ]),
    )
    .expect("valid");
    assert!(s.http.require_token_for_reads && !s.http.metrics_require_token);
}

#[test]
fn reads_are_exposed_only_off_loopback_without_the_token_requirement() {
    let http = |listen: &str, require: bool| HttpSettings {
        listen: listen.parse().expect("address"),
        api_token: None,
        require_token_for_reads: require,
        metrics_require_token: false,
    };
    assert!(!http("127.0.0.1:9464", false).reads_exposed());
    assert!(!http("[::1]:9464", false).reads_exposed());
    assert!(!http("[::ffff:127.0.0.1]:9464", false).reads_exposed());
    assert!(http("0.0.0.0:9464", false).reads_exposed());
    assert!(http("[::]:9464", false).reads_exposed());
    assert!(http("10.1.2.3:9464", false).reads_exposed());
    assert!(!http("0.0.0.0:9464", true).reads_exposed());
}

#[test]
fn tenant_ids_are_guids_or_domains() {
    assert!(is_tenant_id("72f988bf-86f1-41af-91ab-2d7cd011db47"));
    assert!(is_tenant_id("contoso.onmicrosoft.com"));
    assert!(!is_tenant_id("not a tenant"));
    assert!(!is_tenant_id("../etc"));
}

#[test]
fn each_cloud_preset_picks_its_endpoints_and_audiences() {
    for (cloud, authority, graph, arm) in [
        (
            "public",
            "https://login.microsoftonline.com",
            "https://graph.microsoft.com",
            "https://management.azure.com",
        ),
        (
            "usgovernment",
            "https://login.microsoftonline.us",
            "https://graph.microsoft.us",
            "https://management.usgovcloudapi.net",
        ),
        (
            "china",
            "https://login.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn",
            "https://management.chinacloudapi.cn",
        ),
    ] {
        let f = file(&format!("[azure]\ncloud = \"{cloud}\"\n"));
        let s = Settings::load(Some(f.path()), &Env::new()).expect(cloud);
        assert_eq!(s.azure.authority_host, authority, "{cloud}");
        assert_eq!(s.azure.graph_endpoint, graph, "{cloud}");
        assert_eq!(s.azure.arm_endpoint, arm, "{cloud}");
        assert_eq!(s.azure.graph_scope, format!("{graph}/.default"), "{cloud}");
        assert_eq!(s.azure.arm_scope, format!("{arm}/.default"), "{cloud}");
    }
}

#[test]
fn a_token_of_one_cloud_is_never_meant_for_another_clouds_endpoint() {
    let f = file(
        "[azure]\ncloud = \"usgovernment\"\ngraph_endpoint = \"https://graph.microsoft.com\"\n",
    );
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("mixed clouds");
    assert!(
        err.0
            .iter()
            .any(|e| e.starts_with("azure.graph_endpoint:") && e.contains("public cloud")),
        "{err}"
    );
    let f = file("[azure]\narm_scope = \"https://management.chinacloudapi.cn/.default\"\n");
    assert!(Settings::load(Some(f.path()), &Env::new()).is_err());
    // A proxy or a simulator is no cloud's host: allowed.
    let f = file("[azure]\ncloud = \"china\"\ngraph_endpoint = \"http://127.0.0.1:8080\"\n");
    assert!(Settings::load(Some(f.path()), &Env::new()).is_ok());
}

#[test]
fn a_managed_identity_is_not_shared_by_several_tenants_and_tenant_tables_ignore_the_environment() {
    let two = "[[tenants]]\nid = \"00000000-0000-0000-0000-000000000001\"\n[[tenants]]\nid = \"00000000-0000-0000-0000-000000000002\"\n";
    let f = file(&format!("[auth]\nmethod = \"managed_identity\"\n{two}"));
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid file");
    let err = s.check_scan_ready().expect_err("one identity, two tenants");
    assert!(
        err.0
            .iter()
            .any(|e| e.starts_with("auth.method: a managed identity belongs to one tenant")),
        "{err}"
    );
    let env: Env = [
        ("AZURE_CLIENT_SECRET", "main-app-secret"),
        ("AZURE_CLIENT_ID", "main-app"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let f = file(
        "[[tenants]]\nid = \"00000000-0000-0000-0000-000000000002\"\n\
         [tenants.auth]\nmethod = \"client_secret\"\nclient_id = \"app-b\"\n",
    );
    let s = Settings::load(Some(f.path()), &env).expect("valid");
    let own = s.tenants[0].auth.as_ref().expect("own auth");
    assert!(
        own.client_secret.is_none(),
        "the main app's secret is not this app's"
    );
    assert!(s.check_scan_ready().is_err());
}

#[test]
fn a_tenant_in_another_cloud_gets_that_clouds_endpoints_and_audiences() {
    let f = file(
        "[[tenants]]\nid = \"00000000-0000-0000-0000-000000000001\"\n\
         [[tenants]]\nid = \"00000000-0000-0000-0000-000000000002\"\ncloud = \"usgovernment\"\n\
         [[tenants]]\nid = \"00000000-0000-0000-0000-000000000003\"\ncloud = \"public\"\n",
    );
    let s = Settings::load(Some(f.path()), &Env::new()).expect("valid");
    let gov = s.azure_for(&s.tenants[1].id);
    assert_eq!(gov.cloud, Cloud::UsGovernment);
    assert_eq!(gov.authority_host, "https://login.microsoftonline.us");
    assert_eq!(gov.graph_scope, "https://graph.microsoft.us/.default");
    assert_eq!(gov.arm_endpoint, "https://management.usgovcloudapi.net");
    assert_eq!(s.azure_for(&s.tenants[0].id).cloud, Cloud::Public);
    assert!(
        s.tenants[2].azure.is_none(),
        "[azure]'s own cloud: its settings, overrides included"
    );
    let f = file("[[tenants]]\nid = \"00000000-0000-0000-0000-000000000001\"\ncloud = \"mars\"\n");
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("unknown cloud");
    assert!(err.0[0].starts_with("tenants[0].cloud:"), "{err}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_at_start_up() {
    let fixture = |n: &str| format!("{}/tests/fixtures/auth/{n}", env!("CARGO_MANIFEST_DIR"));
    let with = |cert: &str, key: &str| {
        file(&format!(
            "[auth]\nmethod = \"client_certificate\"\nclient_id = \"c\"\ncertificate_path = \"{}\"\nprivate_key_path = \"{}\"\n",
            fixture(cert),
            fixture(key)
        ))
    };
    let f = with("app-cert.pem", "app-key.pem");
    let s = Settings::load(Some(f.path()), &Env::new()).expect("a matching pair");
    assert!(s.auth.certificate.is_some());
    let f = with("app-cert.pem", "other-key.pem");
    let err = Settings::load(Some(f.path()), &Env::new()).expect_err("mismatched");
    assert!(
        err.0[0].starts_with("auth.private_key_path: the private key does not belong"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("BEGIN"),
        "no key material in the message"
    );
}

#[test]
fn webhooks_are_read_with_defaults_and_every_problem_named_without_the_url() {
    let ok = Settings::from_toml_str(
        "[notify]\nmax_attempts = 3\n\n[[notify.webhooks]]\nurl = \"https://hooks.example.com/a\"\nsecret = \"s3cr3t-signing\"\n\n[[notify.webhooks]]\nname = \"chat\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\nkind = \"slack\"\nevents = [\"confirmed\"]\n",
        &Env::new(),
    )
    .expect("valid");
    let n = &ok.notify;
    assert_eq!(n.max_attempts, 3);
    assert_eq!(n.webhooks.len(), 2);
    assert_eq!(n.webhooks[0].name, "webhook-1");
    assert_eq!(n.webhooks[0].kind, crate::domain::SinkKind::Json);
    assert_eq!(n.webhooks[0].events, crate::domain::EventType::ALL.to_vec());
    assert_eq!(
        n.webhooks[1].events,
        vec![crate::domain::EventType::Confirmed]
    );
    assert!(
        !format!("{n:?}").contains("s3cr3t-signing"),
        "Debug hides secrets"
    );
    assert!(
        !format!("{n:?}").contains("hooks.example.com"),
        "Debug hides URLs"
    );
    assert_eq!(
        Settings::load(None, &Env::new())
            .expect("defaults")
            .notify
            .max_attempts,
        DEFAULT_MAX_ATTEMPTS
    );

    let bad = Settings::from_toml_str(
        "[[notify.webhooks]]\nurl = \"http://hooks.example.com/SECRETPATH\"\nkind = \"pager\"\n\n[[notify.webhooks]]\nurl = \"http://hooks.example.com/SECRETPATH2\"\nevents = [\"created\"]\nsecret = \"abcdEFGH\"\ncolour = \"red\"\n\n[[notify.webhooks]]\nkind = \"teams\"\nsecret = \"zzzzYYYY\"\n",
        &Env::new(),
    )
    .expect_err("refused")
    .to_string();
    for needle in [
        "notify.webhooks[0].kind: \"pager\" is not one of json, slack, teams",
        "notify.webhooks[1].colour: unknown key",
        "notify.webhooks[1].events: \"created\" is not one of",
        "notify.webhooks[1].url: must use https",
        "notify.webhooks[2].url: missing",
        "notify.webhooks[2].secret: only a json webhook is signed",
    ] {
        assert!(bad.contains(needle), "{needle} missing from:\n{bad}");
    }
    for secret in ["SECRETPATH", "abcdEFGH", "zzzzYYYY"] {
        assert!(!bad.contains(secret), "{secret} printed:\n{bad}");
    }
    let dup = Settings::from_toml_str(
        "[[notify.webhooks]]\nname = \"a\"\nurl = \"https://x.example/1\"\n[[notify.webhooks]]\nname = \"a\"\nurl = \"https://x.example/2\"\n",
        &Env::new(),
    )
    .expect_err("two of one name")
    .to_string();
    assert!(dup.contains("notify.webhooks[1].name"), "{dup}");
}
