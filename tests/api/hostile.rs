//! Hostile HTTP input: every answer is a 4xx problem (never a 500, never a panic), and the server keeps
//! serving. Requests are written raw over TCP so nothing normalises them on the way.

use crate::helpers::*;
use miaudit_sim::SimConfig;
use miaudit_sim::model::World;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw(addr: &str, request: &[u8]) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn get(path: &[u8]) -> Vec<u8> {
    let mut r = b"GET ".to_vec();
    r.extend_from_slice(path);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    r
}

#[tokio::test]
async fn hostile_requests_get_4xx_problems_and_the_server_keeps_serving() {
    let env = TestEnv::start(World::generate(8, 100), SimConfig::default()).await;
    let d = env
        .daemon("[http]\nlisten = \"127.0.0.1:0\"\napi_token = \"t0k3n\"\n")
        .await;
    d.scan().await;
    let addr = d.base.trim_start_matches("http://").to_owned();
    let long = "a".repeat(5000);
    let paths: Vec<Vec<u8>> = vec![
        b"/api/v1/findings?limit=99999999999999999999".to_vec(),
        b"/api/v1/findings?limit=-1".to_vec(),
        b"/api/v1/findings?cursor=%FF%FE%00".to_vec(),
        b"/api/v1/findings?cursor=eyJub3QiOiJhcnJheSJ9".to_vec(),
        b"/api/v1/findings?state=%FF".to_vec(),
        b"/api/v1/findings?tenant_id=x'%20OR%20'1'='1".to_vec(),
        b"/api/v1/findings?tenant_id=1;drop%20table%20findings".to_vec(),
        b"/api/v1/findings?resource_type=%3Cscript%3E".to_vec(),
        b"/api/v1/findings?subscription_id=../../etc/passwd".to_vec(),
        b"/api/v1/findings?%FF=1".to_vec(),
        format!("/api/v1/findings?verdict={long}").into_bytes(),
        b"/api/v1/findings/..%2F..%2Fetc/passwd".to_vec(),
        b"/api/v1/findings/%FF%FE/%00".to_vec(),
        b"/api/v1/findings/a/b/c/d".to_vec(),
        b"/api/v1/scans/%FF".to_vec(),
        format!("/api/v1/scans/{long}").into_bytes(),
        b"/api/v1/scans?cursor=!!!".to_vec(),
        b"/api/v1/export?format=../../x".to_vec(),
        b"/api/v1/export?state=resolved,hacked".to_vec(),
        b"/../../../etc/passwd".to_vec(),
    ];
    for p in &paths {
        let (status, head, body) = raw(&addr, &get(p)).await;
        let shown = String::from_utf8_lossy(p)
            .chars()
            .take(80)
            .collect::<String>();
        assert!(
            (400..500).contains(&status),
            "{shown}: {status}\n{head}\n{body}"
        );
        assert!(
            head.contains("content-type: application/problem+json"),
            "{shown}: {head}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{shown}: not JSON: {body}"));
        assert_eq!(v["status"].as_u64(), Some(u64::from(status)));
        assert!(
            !body.contains("sqlx") && !body.contains("panicked") && body.len() < 2000,
            "{shown}: {body}"
        );
    }
    // Bodies: malformed JSON, invalid UTF-8, oversized, on an authorised endpoint.
    let ack = format!("/api/v1/findings/{TENANT}/00000000-0000-0000-0000-000000000000/acknowledge");
    for (body, want) in [
        (b"{\"ticket\": ".to_vec(), 400),
        (b"{\"ticket\": \"\xFF\xFE\"}".to_vec(), 400),
        (b"null".to_vec(), 400),
        (vec![b'['; 100_000], 413),
    ] {
        let mut req = format!("POST {ack} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer t0k3n\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(&body);
        let (status, head, _) = raw(&addr, &req).await;
        assert_eq!(status, want, "{head}");
    }
    // A header that is not the scheme we take.
    let req: &[u8] = b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic dDBrM246\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(raw(&addr, req).await.0, 401);
    let (status, _, _) = raw(
        &addr,
        b"DELETE /api/v1/findings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    // Still serving.
    let (status, _, body) = raw(&addr, &get(b"/api/v1/findings?limit=5")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = raw(&addr, &get(b"/healthz")).await;
    assert_eq!(status, 200);
    d.stop().await;
}
