//! Shared helpers for the integration tests: certificates, a server on loopback,
//! TLS clients and AdmissionReviews shaped like the API server's.
#![allow(dead_code)]

pub mod fake_api;
pub mod operator;
pub mod receiver;

use canary_notifier::certs::{CertRequest, GeneratedCerts};
use canary_notifier::destination_policy::DestinationPolicy;
use canary_notifier::serve::{BoundServer, ServeSettings};
use canary_notifier::tls::CertificateFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn generate_certs() -> GeneratedCerts {
    CertRequest {
        service: "canary-notifier".into(),
        namespace: "canary-notifier".into(),
        extra_dns: vec!["localhost".into()],
        extra_ips: vec!["127.0.0.1".parse().unwrap()],
        days: 2,
    }
    .generate()
    .unwrap()
}

pub fn settings(dir: &Path) -> ServeSettings {
    ServeSettings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        tls: CertificateFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        tls_reload_interval: Duration::from_millis(100),
        request_timeout: Duration::from_secs(4),
        drain_timeout: Duration::from_secs(10),
        max_body_bytes: 64 * 1024,
        policy: DestinationPolicy::default(),
    }
}

pub struct RunningServer {
    pub admission: SocketAddr,
    pub ops: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    pub async fn start(settings: ServeSettings) -> RunningServer {
        let server = Self::start_unready(settings).await;
        server.wait_ready().await;
        server
    }

    /// Starts without waiting for readiness (e.g. before any certificate exists).
    pub async fn start_unready(settings: ServeSettings) -> RunningServer {
        canary_notifier::tls::install_crypto_provider();
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info")
            .try_init();
        let bound = BoundServer::bind(settings).await.unwrap();
        let admission = bound.admission_addr().unwrap();
        let ops = bound.ops_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(bound.run(async move {
            let _ = rx.await;
        }));
        RunningServer {
            admission,
            ops,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn readyz(&self) -> u16 {
        match reqwest::get(format!("http://{}/readyz", self.ops)).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.readyz().await == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let body = match reqwest::get(format!("http://{}/readyz", self.ops)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        panic!("server never became ready: {body}");
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

pub fn client_tls(ca_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    canary_notifier::tls::install_crypto_provider();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[derive(Clone, Copy, Debug)]
pub enum Http {
    V1,
    V2,
}

/// A client that trusts only `ca_pem` and speaks exactly one HTTP version.
pub fn client(ca_pem: &str, http: Http) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10));
    let builder = match http {
        Http::V1 => builder
            .use_preconfigured_tls(client_tls(ca_pem, &[b"http/1.1"]))
            .http1_only(),
        Http::V2 => builder
            .use_preconfigured_tls(client_tls(ca_pem, &[b"h2"]))
            .http2_prior_knowledge(),
    };
    builder.build().unwrap()
}

/// The leaf certificate a TLS server presents, trusting only `ca_pem`.
pub async fn served_leaf(
    addr: SocketAddr,
    ca_pem: &str,
) -> Result<CertificateDer<'static>, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(ca_pem, &[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| "no peer certificate".to_string())
}

pub fn canary(name: &str, hooks: Value) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": "test", "uid": "3d1c6f43-0f3e-4f3a-9d7a-3c4b0c2f0a11",
                     "annotations": {"team": "payments"}, "finalizers": ["finalizers.flagger.app"]},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898, "gateways": ["public-gateway"]},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50,
                         "webhooks": hooks}
        }
    })
}

/// An admission.k8s.io/v1 AdmissionReview as the API server sends it.
pub fn review(
    uid: &str,
    operation: &str,
    object: Option<Value>,
    old_object: Option<Value>,
    dry_run: bool,
) -> Value {
    let name = object
        .as_ref()
        .or(old_object.as_ref())
        .and_then(|o| o["metadata"]["name"].as_str())
        .unwrap_or("")
        .to_string();
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "flagger.app", "version": "v1beta1", "kind": "Canary"},
            "resource": {"group": "flagger.app", "version": "v1beta1", "resource": "canaries"},
            "requestKind": {"group": "flagger.app", "version": "v1beta1", "kind": "Canary"},
            "requestResource": {"group": "flagger.app", "version": "v1beta1", "resource": "canaries"},
            "name": name,
            "namespace": "test",
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "uid": "aws-iam-authenticator:1234",
                         "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": old_object,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind, "fieldManager": "kubectl-client-side-apply"}
        }
    })
}

/// Polls `check` until it holds, for up to 30 s (generous: tests assert outcomes,
/// not speed).
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A loopback fake API server serving `resources`, and a kubeconfig for it.
pub struct FakeCluster {
    pub api: fake_api::FakeApi,
    pub kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn fake_cluster(resources: Vec<fake_api::Resource>) -> FakeCluster {
    canary_notifier::tls::install_crypto_provider();
    let api = fake_api::FakeApi::start().await;
    for r in resources {
        api.register(r);
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    FakeCluster {
        api,
        kubeconfig,
        _dir: dir,
    }
}
