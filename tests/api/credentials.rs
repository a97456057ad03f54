//! Every credential kind, through the real binary against the simulator's token endpoints: a
//! certificate's signed assertion, a workload identity's federated token file, IMDS, the App Service
//! endpoint, the Azure CLI, and `auto`'s order. Each scan runs at trace level, and its output is searched
//! for every secret the run handled (issue 13, items 1, 6 and 8).

use crate::helpers::*;
use base64::Engine;
use miaudit_sim::model::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, World};
use miaudit_sim::{Credentials, SimConfig, SimHandle};
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture")
}

/// A tenant with one healthy identity, and the simulator with `credentials`.
async fn sim(credentials: Credentials) -> SimHandle {
    let (mut w, sub): (World, String) = world();
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/vm1"));
    SimHandle::start(
        w,
        SimConfig {
            credentials,
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator")
}

/// `miaudit scan --output json` with `[auth]` = `auth` (TOML lines), at trace level, with only `env`
/// (and PATH) in its environment.
async fn scan(sim: &SimHandle, dir: &Path, auth: &str, env: &[(&str, &str)]) -> Run {
    let url = sim.base_url();
    let config = dir.join("miaudit.toml");
    std::fs::write(
        &config,
        format!(
            "[azure]\nauthority_host = \"{url}\"\ngraph_endpoint = \"{url}\"\narm_endpoint = \"{url}\"\n\n\
             [auth]\n{auth}\n\n[[tenants]]\nid = \"{TENANT}\"\n\n[database]\nurl = \"sqlite://{}\"\n{FAST_RETRIES}",
            dir.join("miaudit.db").display()
        ),
    )
    .expect("config");
    let mut all = vec![("RUST_LOG", "trace")];
    all.extend_from_slice(env);
    miaudit(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "scan",
            "--output",
            "json",
        ],
        &all,
    )
    .await
}

/// Neither stream holds any of `secrets`, nor an access token the simulator issued (`sim.` + base64).
fn assert_no_secret(run: &Run, secrets: &[&str]) {
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(!text.contains(s), "{name} holds a secret ({}…)", &s[..4]);
        }
        assert!(
            !text.contains("sim.") || !text.contains("access_token"),
            "{name} holds a token"
        );
        assert!(
            !text
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '_' && c != '-')
                .any(|w| w.starts_with("sim.") && w.len() > 20),
            "{name} holds an access token"
        );
    }
}

/// The private key's base64 lines (each a secret, whatever the rest of the file).
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 40)
        .map(str::to_owned)
        .collect()
}

fn certificate() -> Credentials {
    Credentials {
        certificate_pem: Some(read("app-cert.pem")),
        public_key_pem: Some(read("app-public.pem")),
        ..Credentials::default()
    }
}

fn ok(run: &Run) {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
    assert_eq!(v["complete"], true);
    assert_eq!(v["summary"]["total"], 1);
}

#[tokio::test]
async fn a_certificate_signs_an_assertion_the_token_endpoint_verifies() {
    let sim = sim(certificate()).await;
    let dir = tempfile::tempdir().expect("dir");
    let auth = format!(
        "method = \"client_certificate\"\nclient_id = \"{SIM_CLIENT_ID}\"\ncertificate_path = \"{}\"\nprivate_key_path = \"{}\"",
        fixture("app-cert.pem").display(),
        fixture("app-key.pem").display()
    );
    let run = scan(&sim, dir.path(), &auth, &[]).await;
    ok(&run);
    // Graph and ARM: two tokens, two assertions (the simulator refuses a jti it has seen).
    assert!(sim.requests(miaudit_sim::Api::Token) >= 2);
    let key = read("app-key.pem");
    let lines = key_lines(&key);
    assert_no_secret(&run, &lines.iter().map(String::as_str).collect::<Vec<_>>());

    // The same file holding certificate and key works too.
    let both = dir.path().join("both.pem");
    std::fs::write(&both, read("app-cert.pem") + &key).expect("pem");
    let auth = format!(
        "method = \"client_certificate\"\nclient_id = \"{SIM_CLIENT_ID}\"\ncertificate_path = \"{}\"",
        both.display()
    );
    ok(&scan(&sim, dir.path(), &auth, &[]).await);
}

#[tokio::test]
async fn a_certificate_the_app_does_not_have_is_refused_with_the_aadsts_code() {
    let sim = sim(certificate()).await;
    let dir = tempfile::tempdir().expect("dir");
    let auth = format!(
        "method = \"client_certificate\"\nclient_id = \"{SIM_CLIENT_ID}\"\ncertificate_path = \"{}\"\nprivate_key_path = \"{}\"",
        fixture("other-cert.pem").display(),
        fixture("other-key.pem").display()
    );
    let run = scan(&sim, dir.path(), &auth, &[]).await;
    assert_eq!(run.code, 3, "an incomplete scan: {}", run.stderr);
    assert!(run.stdout.contains("AADSTS700027") || run.stderr.contains("AADSTS700027"));
    let key = read("other-key.pem");
    let lines = key_lines(&key);
    assert_no_secret(&run, &lines.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_bad_certificate_file_is_a_configuration_error_naming_the_key() {
    let sim = sim(certificate()).await;
    let dir = tempfile::tempdir().expect("dir");
    let auth = format!(
        "method = \"client_certificate\"\nclient_id = \"{SIM_CLIENT_ID}\"\ncertificate_path = \"{}\"",
        fixture("app-cert.pem").display()
    );
    let run = scan(&sim, dir.path(), &auth, &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("auth.certificate_path: no private key"),
        "{}",
        run.stderr
    );
    let missing = scan(
        &sim,
        dir.path(),
        "method = \"client_certificate\"\ncertificate_path = \"/nonexistent.pem\"",
        &[],
    )
    .await;
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("auth.certificate_path: cannot read /nonexistent.pem"),
        "{}",
        missing.stderr
    );
}

/// A federated token as the kubelet writes it: a JWT from the cluster's issuer (the simulator checks
/// issuer, subject, audience and time, as Entra checks the federated identity credential).
fn federated_token(subject: &str) -> String {
    let b = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = chrono::Utc::now().timestamp();
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b(serde_json::json!({"alg": "RS256", "kid": "k1"})),
        b(
            serde_json::json!({"iss": "https://oidc.example.test/cluster", "sub": subject,
            "aud": ["api://AzureADTokenExchange"], "iat": now, "nbf": now, "exp": now + 3600})
        )
    )
}

const SUBJECT: &str = "system:serviceaccount:audit:miaudit";

fn federated() -> Credentials {
    Credentials {
        federated: Some(("https://oidc.example.test/cluster".into(), SUBJECT.into())),
        ..Credentials::default()
    }
}

#[tokio::test]
async fn workload_identity_reads_the_variables_aks_injects() {
    let sim = sim(federated()).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("azure-identity-token");
    let token = federated_token(SUBJECT);
    std::fs::write(&file, &token).expect("token file");
    let env = [
        ("AZURE_CLIENT_ID", SIM_CLIENT_ID),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().expect("utf-8")),
    ];
    let run = scan(&sim, dir.path(), "method = \"workload_identity\"", &env).await;
    ok(&run);
    assert_no_secret(&run, &[&token]);
    // `auto` picks it, and says why it passed over the client secret.
    let run = scan(&sim, dir.path(), "", &env).await;
    ok(&run);
    assert!(
        run.stderr.contains("authenticating with workload identity"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("client secret: neither a client secret nor a certificate"),
        "{}",
        run.stderr
    );
    // A token for another service account is refused (AADSTS70021).
    std::fs::write(&file, federated_token("system:serviceaccount:other:app")).expect("token file");
    let run = scan(&sim, dir.path(), "method = \"workload_identity\"", &env).await;
    assert_eq!(run.code, 3);
    assert!(run.stdout.contains("AADSTS70021"), "{}", run.stdout);
}

#[tokio::test]
async fn the_federated_token_file_is_read_again_for_every_token() {
    let (mut w, sub) = world();
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/vm1"));
    let sim = SimHandle::start(
        w,
        SimConfig {
            credentials: federated(),
            // Tokens that need refreshing within the test.
            token_lifetime_secs: 2,
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("token");
    std::fs::write(&file, federated_token(SUBJECT)).expect("token file");
    let url = sim.base_url();
    let text = format!(
        "[azure]\nauthority_host = \"{url}\"\ngraph_endpoint = \"{url}\"\narm_endpoint = \"{url}\"\n\
         [auth]\nmethod = \"workload_identity\"\nclient_id = \"{SIM_CLIENT_ID}\"\nfederated_token_file = \"{}\"\n\
         [[tenants]]\nid = \"{TENANT}\"\n",
        file.display()
    );
    let settings =
        miaudit::config::Settings::from_toml_str(&text, &Default::default()).expect("settings");
    let scanner = miaudit::scan::Scanner::new(&settings).expect("scanner");
    let first = scanner
        .run(&settings.tenant_ids(), miaudit::domain::Trigger::Cli)
        .await;
    assert!(first.complete, "{:?}", first.tenants);
    let before = sim.requests(miaudit_sim::Api::Token);
    // The kubelet rotates the file: the next token request must send the new contents, which the
    // simulator refuses here (another subject), so a scan that reused the old contents would pass.
    std::fs::write(
        &file,
        federated_token("system:serviceaccount:rotated:other"),
    )
    .expect("rotated");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let second = scanner
        .run(&settings.tenant_ids(), miaudit::domain::Trigger::Cli)
        .await;
    assert!(
        sim.requests(miaudit_sim::Api::Token) > before,
        "tokens were refreshed"
    );
    assert!(!second.complete);
    assert!(
        second.tenants[0]
            .errors
            .iter()
            .any(|e| e.contains("AADSTS70021")),
        "{:?}",
        second.tenants[0].errors
    );
}

#[tokio::test]
async fn a_managed_identity_gets_its_token_from_imds() {
    let sim = sim(Credentials {
        imds: true,
        user_assigned: vec!["11111111-2222-3333-4444-555555555555".into()],
        ..Credentials::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let imds = format!("imds_endpoint = \"{}\"", sim.base_url());
    let run = scan(
        &sim,
        dir.path(),
        &format!("method = \"managed_identity\"\n{imds}"),
        &[],
    )
    .await;
    ok(&run);
    assert_no_secret(&run, &[]);
    // A user-assigned identity by client id; one the host does not have is refused.
    ok(&scan(
        &sim,
        dir.path(),
        &format!("method = \"managed_identity\"\n{imds}\nclient_id = \"11111111-2222-3333-4444-555555555555\""),
        &[],
    )
    .await);
    let run = scan(
        &sim,
        dir.path(),
        &format!("method = \"managed_identity\"\n{imds}\nclient_id = \"99999999-2222-3333-4444-555555555555\""),
        &[],
    )
    .await;
    assert_eq!(run.code, 3);
    assert!(run.stdout.contains("Identity not found"), "{}", run.stdout);
    // The variable Microsoft's SDKs honour points at it too; `auto` falls through to it.
    let run = scan(
        &sim,
        dir.path(),
        "",
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", sim.base_url())],
    )
    .await;
    ok(&run);
    assert!(
        run.stderr.contains("authenticating with managed identity"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("workload identity: AZURE_FEDERATED_TOKEN_FILE is not set"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn app_service_and_container_apps_use_their_identity_endpoint() {
    let header = "3c0a9f4e-identity-header-value";
    let sim = sim(Credentials {
        identity_header: Some(header.into()),
        ..Credentials::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let endpoint = format!("{}/msi/token", sim.base_url());
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", header),
    ];
    let run = scan(&sim, dir.path(), "method = \"managed_identity\"", &env).await;
    ok(&run);
    assert_no_secret(&run, &[header]);
    let wrong = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "wrong-header-value"),
    ];
    let run = scan(&sim, dir.path(), "method = \"managed_identity\"", &wrong).await;
    assert_eq!(run.code, 3);
    assert_no_secret(&run, &["wrong-header-value"]);
}

/// A stand-in `az` that prints, for `--resource R`, a token the simulator issued for R.
async fn fake_az(sim: &SimHandle, dir: &Path) -> PathBuf {
    let client = reqwest::Client::new();
    let mut tokens = Vec::new();
    for resource in [
        "https://graph.microsoft.com",
        "https://management.azure.com",
    ] {
        let v: serde_json::Value = client
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", sim.base_url()))
            .form(&[
                ("client_id", SIM_CLIENT_ID),
                ("client_secret", SIM_CLIENT_SECRET),
                ("grant_type", "client_credentials"),
                ("scope", &format!("{resource}/.default")),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        tokens.push(v["access_token"].as_str().expect("token").to_owned());
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let expires = chrono::Utc::now().timestamp() + 3600;
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *graph.microsoft.com*) t={} ;;\n  *) t={} ;;\nesac\n\
         printf '{{\"accessToken\": \"%s\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \"expires_on\": {expires}, \"tenant\": \"{TENANT}\", \"tokenType\": \"Bearer\"}}' \"$t\"\n",
        tokens[0], tokens[1]
    );
    let az = bin.join("az");
    std::fs::write(&az, script).expect("az");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

#[tokio::test]
async fn the_azure_cli_gives_tokens_and_says_when_it_is_missing() {
    let sim = sim(Credentials::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let bin = fake_az(&sim, dir.path()).await;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd_env = vec![("PATH", path.as_str())];
    let run = scan(&sim, dir.path(), "method = \"azure_cli\"", &cmd_env).await;
    ok(&run);
    assert_no_secret(&run, &[]);
    // `auto` ends with the CLI when nothing else is there (IMDS pointed at a closed port).
    let closed = "imds_endpoint = \"http://127.0.0.1:9\"";
    let run = scan(&sim, dir.path(), closed, &cmd_env).await;
    ok(&run);
    assert!(
        run.stderr.contains("authenticating with Azure CLI"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("managed identity: no managed identity endpoint answered"),
        "{}",
        run.stderr
    );
    // No `az` on PATH: a clear error.
    cmd_env[0] = ("PATH", "/nonexistent");
    let run = scan(&sim, dir.path(), "method = \"azure_cli\"", &cmd_env).await;
    assert_eq!(run.code, 3);
    assert!(
        run.stdout.contains("`az` is not installed"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn auto_prefers_the_environments_secret_and_never_logs_it() {
    let sim = sim(Credentials::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let env = [
        ("AZURE_CLIENT_ID", SIM_CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SIM_CLIENT_SECRET),
    ];
    let run = scan(&sim, dir.path(), "", &env).await;
    ok(&run);
    assert!(
        run.stderr.contains("authenticating with client secret"),
        "{}",
        run.stderr
    );
    // Nothing came before it, so nothing is said to have been skipped.
    assert!(
        !run.stderr.contains("AZURE_FEDERATED_TOKEN_FILE is not set"),
        "{}",
        run.stderr
    );
    assert_no_secret(&run, &[SIM_CLIENT_SECRET]);
}

async fn assert_coverage_exported(d: &Daemon) {
    let text = reqwest::get(d.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(&format!(
            "miaudit_subscription_coverage_ratio{{tenant_id=\"{TENANT}\"}} 0.5"
        )),
        "{text}"
    );
}

/// Coverage: the subscriptions the tenant's managed identities name, and how many of them the
/// credential's subscription listing shows; in the report and as a metric after the daemon's scan.
#[tokio::test]
async fn coverage_counts_the_subscriptions_the_credential_cannot_list() {
    use miaudit_sim::model::SubAccess;
    let (mut w, sub) = world();
    let hidden = w.add_subscription("hidden", SubAccess::NoAccess);
    let other = w.add_subscription("other", SubAccess::Reader);
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/a"));
    w.add_system_assigned(&rid(
        &hidden,
        "rg",
        "Microsoft.Compute",
        "virtualMachines/b",
    ));
    w.add_system_assigned(&rid(&hidden, "rg", "Microsoft.Web", "sites/c"));
    let _ = other; // listed, but no identity names it: not counted
    let env = TestEnv::start(w, SimConfig::default()).await;
    let r = env.scan().await;
    let c = r.tenants[0].subscription_coverage.expect("coverage");
    assert_eq!((c.referenced, c.listed), (2, 1));
    assert!((c.ratio - 0.5).abs() < 1e-9);
    let d = env.daemon("").await;
    d.scan().await;
    assert_coverage_exported(&d).await;
    d.stop().await;
    // A restarted daemon exports it from the database before it scans again.
    let d = env.daemon("").await;
    assert_coverage_exported(&d).await;
    d.stop().await;
}

/// Three tenants with one shared app: one works, one has not provisioned the app (AADSTS700016), one
/// does not exist (AADSTS90002). The working tenant's results stand; the others are incomplete with
/// their reason; `miaudit check` names each failure with its fix, as text and as JSON.
#[tokio::test]
async fn three_tenants_of_which_two_refuse_and_the_doctor_says_why() {
    let rejecting = "0badc0de-0000-4000-8000-000000000001";
    let unknown = "0badc0de-0000-4000-8000-000000000002";
    let (mut w, sub) = world();
    let gone_id = rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/gone");
    let gone = w.add_system_assigned(&gone_id);
    w.delete_resource(&gone_id);
    let env = TestEnv::start(
        w,
        SimConfig {
            credentials: Credentials {
                rejecting_tenants: vec![rejecting.into()],
                ..Credentials::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    std::fs::write(
        &env.config_path,
        format!("{text}\n[[tenants]]\nid = \"{rejecting}\"\n\n[[tenants]]\nid = \"{unknown}\"\n"),
    )
    .expect("config");
    let r = env.scan().await;
    assert!(r.tenants[0].complete);
    assert_eq!(outcome(&r, &gone), ("orphaned", "resource_not_found"));
    assert!(!r.tenants[1].complete && r.tenants[1].errors[0].contains("AADSTS700016"));
    assert!(!r.tenants[2].complete && r.tenants[2].errors[0].contains("AADSTS90002"));
    assert!(!r.complete);

    let cfg = env.config_path.to_str().expect("utf-8");
    let run = |args: Vec<&'static str>| {
        let cfg = cfg.to_owned();
        async move {
            let out = tokio::process::Command::new(BIN)
                .arg("--config")
                .arg(&cfg)
                .args(args)
                .env_clear()
                .output()
                .await
                .expect("runs");
            (
                out.status.code().expect("code"),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let (code, json) = run(vec!["check", "--output", "json"]).await;
    assert_eq!(code, 3, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("one JSON document");
    assert_eq!(v["ok"], false);
    let tenants = v["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 3);
    assert_eq!(tenants[0]["ok"], true, "{json}");
    for c in tenants[0]["checks"].as_array().expect("checks") {
        assert_eq!(c["ok"], true, "{c}");
        assert!(c["fix"].is_null());
    }
    let names: Vec<&str> = tenants[0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "token_graph",
            "token_arm",
            "graph",
            "subscriptions",
            "resource_graph",
            "coverage"
        ]
    );
    let token_fix = |t: usize| {
        tenants[t]["checks"][0]["fix"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        token_fix(1).contains(&format!("az ad sp create --id {SIM_CLIENT_ID}")),
        "{json}"
    );
    assert!(token_fix(1).contains(&format!("adminconsent?client_id={SIM_CLIENT_ID}")));
    assert!(
        token_fix(2).contains("correct the [[tenants]] id"),
        "{json}"
    );
    // Every check runs, whatever failed before it.
    assert!(tenants[1]["checks"].as_array().expect("checks").len() >= 4);
    let (code, text) = run(vec!["check"]).await;
    assert_eq!(code, 3);
    assert!(
        text.contains("[FAIL] token_graph") && text.contains("fix: the application"),
        "{text}"
    );
    assert!(!text.contains(SIM_CLIENT_SECRET));
}

#[tokio::test]
async fn the_doctor_names_a_missing_graph_permission_and_partial_coverage() {
    use miaudit_sim::model::SubAccess;
    use miaudit_sim::{Fault, FaultRule};
    let (mut w, sub) = world();
    let hidden = w.add_subscription("hidden", SubAccess::NoAccess);
    w.add_system_assigned(&rid(&sub, "rg", "Microsoft.Compute", "virtualMachines/a"));
    w.add_system_assigned(&rid(
        &hidden,
        "rg",
        "Microsoft.Compute",
        "virtualMachines/b",
    ));
    let env = TestEnv::start(w, SimConfig::default()).await;
    let cfg = env.config_path.to_str().expect("utf-8").to_owned();
    let check = || async {
        let out = tokio::process::Command::new(BIN)
            .args(["--config", &cfg, "check", "--output", "json"])
            .env_clear()
            .output()
            .await
            .expect("runs");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        (out.status.code().expect("code"), v)
    };
    let (code, v) = check().await;
    assert_eq!(code, 3);
    let coverage = v["tenants"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "coverage")
        .expect("coverage check")
        .clone();
    assert_eq!(coverage["ok"], false);
    assert!(
        coverage["detail"]
            .as_str()
            .expect("detail")
            .contains("lists 1 of 2"),
        "{coverage}"
    );
    assert!(
        coverage["fix"]
            .as_str()
            .expect("fix")
            .contains("--role Reader")
    );
    assert_eq!(v["tenants"][0]["coverage"]["ratio"], 0.5);
    // Graph refuses: the permission to grant is named.
    env.sim.add_fault(FaultRule {
        api: miaudit_sim::Api::Graph,
        path_contains: None,
        times: None,
        fault: Fault::Status(403),
    });
    let (code, v) = check().await;
    assert_eq!(code, 3);
    let graph = &v["tenants"][0]["checks"][2];
    assert_eq!(graph["name"], "graph");
    assert!(
        graph["fix"]
            .as_str()
            .expect("fix")
            .contains("Application.Read.All"),
        "{graph}"
    );
}

/// A cold cache and many callers at once (ARM checks eight at a time, Graph and Resource Graph beside
/// them): one token request per audience, whatever the credential.
#[tokio::test]
async fn concurrent_callers_share_one_token_request_per_audience() {
    let (mut w, sub) = world();
    for i in 0..40 {
        let id = rid(
            &sub,
            "rg",
            "Microsoft.Compute",
            &format!("virtualMachines/vm{i}"),
        );
        w.add_system_assigned(&id);
        // Resource Graph does not show them yet: ARM checks every one.
        w.hide_from_resource_graph(&id);
    }
    let sim = SimHandle::start(
        w,
        SimConfig {
            credentials: certificate(),
            latencies: miaudit_sim::Latencies {
                token: std::time::Duration::from_millis(200),
                ..miaudit_sim::Latencies::ZERO
            },
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let auth = format!(
        "method = \"client_certificate\"\nclient_id = \"{SIM_CLIENT_ID}\"\ncertificate_path = \"{}\"\nprivate_key_path = \"{}\"",
        fixture("app-cert.pem").display(),
        fixture("app-key.pem").display()
    );
    let run = scan(&sim, dir.path(), &auth, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sim.requests(miaudit_sim::Api::Token), 2, "one per audience");
}

/// Twenty callers at once with a cold cache, then again when the token is due for refresh: one token
/// request each time (single flight), and the still-valid token is what the callers waiting on the
/// refresh get.
#[tokio::test]
async fn twenty_callers_at_once_make_one_token_request() {
    use miaudit::azure::Counters;
    use miaudit::azure::auth::TokenProvider;
    use miaudit::azure::transport::{RetryPolicy, Transport};
    let (w, _) = world();
    let sim = SimHandle::start(
        w,
        SimConfig {
            // Refreshed at half-life: after 1 s.
            token_lifetime_secs: 2,
            latencies: miaudit_sim::Latencies {
                token: std::time::Duration::from_millis(300),
                ..miaudit_sim::Latencies::ZERO
            },
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator");
    let url = sim.base_url();
    let text = format!(
        "[azure]\nauthority_host = \"{url}\"\ngraph_endpoint = \"{url}\"\narm_endpoint = \"{url}\"\n\
         [auth]\nclient_id = \"{SIM_CLIENT_ID}\"\nclient_secret = \"{SIM_CLIENT_SECRET}\"\n\
         [[tenants]]\nid = \"{TENANT}\"\n"
    );
    let settings =
        miaudit::config::Settings::from_toml_str(&text, &Default::default()).expect("settings");
    let transport = Transport::new(
        reqwest::Client::new(),
        RetryPolicy::default(),
        std::sync::Arc::new(Counters::default()),
    );
    let tokens = std::sync::Arc::new(TokenProvider::new(transport, url, &settings.auth));
    let scope = settings.azure.arm_scope.clone();
    let burst = || {
        let calls = (0..20).map(|_| {
            let (tokens, scope) = (tokens.clone(), scope.clone());
            tokio::spawn(async move {
                tokens
                    .token(TENANT, &scope)
                    .await
                    .map(|t| t.as_str().to_owned())
            })
        });
        futures::future::join_all(calls)
    };
    let first: Vec<String> = burst()
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("token"))
        .collect();
    assert_eq!(sim.requests(miaudit_sim::Api::Token), 1);
    assert!(first.iter().all(|t| t == &first[0]));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second: Vec<String> = burst()
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("token"))
        .collect();
    assert_eq!(sim.requests(miaudit_sim::Api::Token), 2, "one refresh");
    // While the refresh ran, callers got the still-valid token; the refresher got the new one.
    assert!(second.iter().any(|t| t == &first[0]) && second.iter().any(|t| t != &first[0]));
}
