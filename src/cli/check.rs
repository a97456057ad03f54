//! `miaudit check`: the doctor's checklist on stdout, as text or one JSON document
//! (`{"ok", "tenants": [{"tenant_id", "ok", "checks": [{"name", "ok", "detail", "fix"}]}]}`).
//! A configuration that does not load is itself a failed check (exit 2); any other failed check
//! exits 3; exit 0 only when everything works.

use super::{EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK, LogFormat, Output, log_json};
use crate::config::{Settings, process_env};
use crate::scan::Scanner;
use crate::scan::check::{Check, TenantCheck};
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;

#[derive(Serialize)]
struct Checklist {
    ok: bool,
    /// The configuration check: absent when the configuration loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration: Option<Check>,
    tenants: Vec<TenantCheck>,
}

pub async fn run(
    config: Option<&std::path::Path>,
    output: Output,
    log_format: Option<LogFormat>,
) -> ExitCode {
    let settings =
        Settings::load(config, &process_env()).and_then(|s| s.check_scan_ready().map(|()| s));
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            let list = Checklist {
                ok: false,
                configuration: Some(Check {
                    name: "configuration",
                    ok: false,
                    detail: e.0.join("; "),
                    fix: Some("correct the keys named (see config/miaudit.example.toml)".into()),
                }),
                tenants: Vec::new(),
            };
            print(&list, output);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::telemetry::init(&settings.log.level, log_json(log_format, &settings));
    let scanner = match Scanner::new(&settings) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("miaudit: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let checks = settings.tenants.iter().map(|t| {
        let client = settings
            .auth_for(&t.id)
            .client_id
            .clone()
            .unwrap_or_else(|| "<application id>".into());
        let scanner = &scanner;
        async move {
            scanner
                .check_tenant(&t.id, &client, settings.scan.graph_delta)
                .await
        }
    });
    use futures::StreamExt;
    let tenants: Vec<TenantCheck> = futures::stream::iter(checks)
        .buffered(settings.scan.max_concurrent_tenants.max(1))
        .collect()
        .await;
    let list = Checklist {
        ok: tenants.iter().all(|t| t.ok),
        configuration: None,
        tenants,
    };
    print(&list, output);
    ExitCode::from(if list.ok { EXIT_OK } else { EXIT_INCOMPLETE })
}

fn print(list: &Checklist, output: Output) {
    let mut out = std::io::stdout().lock();
    let _ = match output {
        Output::Json => serde_json::to_writer_pretty(&mut out, list)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        Output::Table => write_text(&mut out, list),
    };
}

fn write_text(out: &mut impl Write, list: &Checklist) -> std::io::Result<()> {
    let line = |out: &mut dyn Write, c: &Check| -> std::io::Result<()> {
        writeln!(
            out,
            "  [{}] {}: {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        )?;
        if let Some(fix) = &c.fix {
            writeln!(out, "         fix: {fix}")?;
        }
        Ok(())
    };
    if let Some(c) = &list.configuration {
        writeln!(out, "configuration")?;
        line(out, c)?;
    }
    for t in &list.tenants {
        writeln!(out, "tenant {}", t.tenant_id)?;
        for c in &t.checks {
            line(out, c)?;
        }
    }
    writeln!(
        out,
        "{}",
        if list.ok {
            "everything works"
        } else {
            "some checks failed: see the fixes above"
        }
    )
}
