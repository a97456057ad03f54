//! A webhook receiver for tests: records every POST (headers and raw body) and answers each with the next
//! status of its script (then 200), optionally with a `Retry-After` and after a delay. Plays the
//! receiving end of miaudit's notifications: a JSON webhook, Slack or a Teams workflow.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Statuses for the next requests, in order; once used up, 200.
    pub statuses: VecDeque<u16>,
    /// `Retry-After` (seconds) sent with a 429 or 503.
    pub retry_after: Option<String>,
    /// Every answer waits this long first.
    pub delay: Duration,
    /// Answer every request with this status (overrides `statuses`).
    pub always: Option<u16>,
    /// A redirect's `Location` for 3xx answers.
    pub location: Option<String>,
}

#[derive(Default)]
struct Inner {
    script: Script,
    received: Vec<Received>,
    /// Requests that arrived, answered or not yet (a delayed answer is counted here first).
    arrived: usize,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on a random loopback port.
    pub async fn start(script: Script) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            script,
            received: Vec::new(),
            arrived: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = inner.clone();
        let app = Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { answer(&state, uri.path().to_owned(), headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner, task })
    }

    /// The receiver's root URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("receiver state").received.clone()
    }

    /// Requests that arrived so far, including those whose answer is still delayed.
    pub fn arrived(&self) -> usize {
        self.inner.lock().expect("receiver state").arrived
    }

    /// Replaces the script (e.g. a receiver that comes back after an outage).
    pub fn set_script(&self, script: Script) {
        self.inner.lock().expect("receiver state").script = script;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(inner: &Mutex<Inner>, path: String, headers: HeaderMap, body: Bytes) -> Response {
    let (status, retry_after, delay, location) = {
        let mut s = inner.lock().expect("receiver state");
        s.arrived += 1;
        let status = s
            .script
            .always
            .or_else(|| s.script.statuses.pop_front())
            .unwrap_or(200);
        (
            status,
            s.script.retry_after.clone(),
            s.script.delay,
            s.script.location.clone(),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    inner
        .lock()
        .expect("receiver state")
        .received
        .push(Received {
            path,
            headers,
            body,
            status,
        });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = (code, if code.is_success() { "ok" } else { "no" }).into_response();
    if let (Some(r), true) = (retry_after, matches!(status, 429 | 503))
        && let Ok(v) = r.parse()
    {
        resp.headers_mut().insert("retry-after", v);
    }
    if let (Some(l), true) = (location, code.is_redirection())
        && let Ok(v) = l.parse()
    {
        resp.headers_mut().insert("location", v);
    }
    resp
}
