//! `miaudit healthcheck`: asks a running daemon's `/healthz`, for container `HEALTHCHECK`s and probes
//! on images without curl. Exit 0 when it answers 200, 1 otherwise (one line on stderr says why).
//!
//! The address: `--url`, else `MIAUDIT_HTTP__LISTEN`, else `[http] listen` of the configuration file,
//! else the default `127.0.0.1:9464`; an unspecified address (`0.0.0.0`, `::`) is asked on loopback.
//! Only that key is read, so a configuration whose credentials are missing (a secret file not mounted
//! yet) still lets the check ask the daemon.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The `/healthz` URL to ask.
pub fn health_url(
    url: Option<&str>,
    env_listen: Option<&str>,
    config_text: Option<&str>,
) -> Result<String, String> {
    if let Some(u) = url {
        return Ok(u.to_owned());
    }
    let from_file = config_text.and_then(|t| {
        let v: toml::Table = t.parse().ok()?;
        v.get("http")?.get("listen")?.as_str().map(str::to_owned)
    });
    let listen = env_listen
        .map(str::to_owned)
        .or(from_file)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let mut addr: SocketAddr = listen.trim().parse().map_err(|_| {
        format!("http.listen {listen:?} is not an address such as {DEFAULT_LISTEN}")
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(format!("http://{addr}/healthz"))
}

/// The URL as it may be printed (a health log keeps it): without a user name or password.
fn without_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "the given URL".to_owned(),
    }
}

pub(super) async fn run(url: Option<String>, config: Option<&Path>, timeout: u64) -> ExitCode {
    let config_text = config.and_then(|p| std::fs::read_to_string(p).ok());
    let env_listen = std::env::var("MIAUDIT_HTTP__LISTEN").ok();
    let url = match health_url(
        url.as_deref(),
        env_listen.as_deref(),
        config_text.as_deref(),
    ) {
        Ok(u) => u,
        Err(e) => {
            // 1, not 2: Docker reserves a health check's exit code 2.
            eprintln!("miaudit healthcheck: {e}");
            return ExitCode::from(1);
        }
    };
    let shown = without_userinfo(&url);
    let client = match reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(timeout.max(1)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("miaudit healthcheck: {e}");
            return ExitCode::from(1);
        }
    };
    match client.get(&url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("miaudit healthcheck: {shown} answered {}", r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            let why = if e.is_timeout() {
                "no answer in time"
            } else {
                "could not connect"
            };
            eprintln!("miaudit healthcheck: {shown}: {why}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::health_url;

    #[test]
    fn the_address_comes_from_the_flag_then_the_environment_then_the_file() {
        let file = "[http]\nlisten = \"0.0.0.0:9500\"\n[auth]\nmethod = \"client_secret\"\n";
        assert_eq!(
            health_url(Some("http://h:1/healthz"), Some("127.0.0.1:1"), Some(file)).unwrap(),
            "http://h:1/healthz"
        );
        assert_eq!(
            health_url(None, Some("10.0.0.5:9600"), Some(file)).unwrap(),
            "http://10.0.0.5:9600/healthz"
        );
        assert_eq!(
            health_url(None, None, Some(file)).unwrap(),
            "http://127.0.0.1:9500/healthz"
        );
        assert_eq!(
            health_url(None, Some("[::]:9464"), None).unwrap(),
            "http://[::1]:9464/healthz"
        );
        assert_eq!(
            health_url(None, None, None).unwrap(),
            "http://127.0.0.1:9464/healthz"
        );
        assert!(health_url(None, Some("nonsense"), None).is_err());
        assert_eq!(
            super::without_userinfo("http://user:pw@127.0.0.1:1/healthz"),
            "http://127.0.0.1:1/healthz"
        );
        // A file that is not TOML leaves the default.
        assert_eq!(
            health_url(None, None, Some("[[[")).unwrap(),
            "http://127.0.0.1:9464/healthz"
        );
    }
}
