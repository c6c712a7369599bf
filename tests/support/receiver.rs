//! A local HTTP(S) receiver that records every request and answers from a script,
//! standing in for Slack, Teams, event webhooks and proxies.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Captured {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn body(mut self, b: &str) -> Self {
        self.body = b.into();
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Clone, Default)]
struct Shared {
    captured: Arc<Mutex<Vec<Captured>>>,
    scripts: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    https: bool,
    handle: axum_server::Handle<SocketAddr>,
}

async fn record(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.captured.lock().unwrap().push(Captured {
        method,
        uri: uri.clone(),
        headers,
        body,
        at: Instant::now(),
    });
    let reply = shared
        .scripts
        .lock()
        .unwrap()
        .get_mut(uri.path())
        .and_then(VecDeque::pop_front)
        .unwrap_or_else(|| Reply::status(200));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    response
}

impl Receiver {
    async fn start_with(tls: Option<axum_server::tls_rustls::RustlsConfig>) -> Receiver {
        let shared = Shared::default();
        let app = Router::new().fallback(record).with_state(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = axum_server::Handle::new();
        let https = tls.is_some();
        match tls {
            Some(tls) => {
                let server = axum_server::from_tcp_rustls(listener, tls)
                    .unwrap()
                    .handle(handle.clone());
                tokio::spawn(server.serve(app.into_make_service()));
            }
            None => {
                let server = axum_server::from_tcp(listener)
                    .unwrap()
                    .handle(handle.clone());
                tokio::spawn(server.serve(app.into_make_service()));
            }
        }
        handle.listening().await;
        Receiver {
            addr,
            shared,
            https,
            handle,
        }
    }

    pub async fn start() -> Receiver {
        Self::start_with(None).await
    }

    /// An HTTPS receiver with a certificate for 127.0.0.1 signed by `certs`' CA.
    pub async fn start_https(certs: &canary_notifier::certs::GeneratedCerts) -> Receiver {
        canary_notifier::tls::install_crypto_provider();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            certs.cert_pem.clone().into_bytes(),
            certs.key_pem.clone().into_bytes(),
        )
        .await
        .unwrap();
        Self::start_with(Some(tls)).await
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Replies for the next requests to `path`, in order; afterwards 200.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.shared
            .scripts
            .lock()
            .unwrap()
            .insert(path.to_string(), replies.into());
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.shared.captured.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Captured> {
        self.requests()
            .into_iter()
            .filter(|c| c.uri.path() == path)
            .collect()
    }

    pub fn stop(&self) {
        self.handle.shutdown();
    }
}
