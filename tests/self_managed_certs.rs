//! Self-managed certificates against the loopback fake API server: the leader
//! creates the Secret and injects the CA into both webhook configurations, a
//! restart reuses them, and through renewals and a CA rotation a client that
//! trusts only the injected bundle keeps connecting. The test plays kubelet,
//! copying the Secret into the files the server reads.

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fake_api::{FakeApi, Resource};
use support::operator::Operator;
use support::{FakeCluster, fake_cluster, wait_for};

fn webhook_config(kind: &str, path: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": "canary-notifier"},
        "webhooks": [{
            "name": format!("{}.canary-notifier.dev", path.trim_start_matches('/')),
            "clientConfig": {"service": {"namespace": "default", "name": "canary-notifier", "path": path, "port": 443}},
            "rules": [{"apiGroups": ["flagger.app"], "apiVersions": ["v1beta1"], "operations": ["CREATE", "UPDATE"], "resources": ["canaries"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"]
        }]
    })
}

struct Cluster {
    api: FakeApi,
    kubeconfig: std::path::PathBuf,
    mounted: tempfile::TempDir,
    _cluster: FakeCluster,
}

impl Cluster {
    async fn new() -> Cluster {
        let cluster = fake_cluster(vec![
            Resource::canaries(),
            Resource::events(),
            Resource::events_v1(),
            Resource::leases(),
            Resource::secrets(),
            Resource::mutating_webhooks(),
            Resource::validating_webhooks(),
        ])
        .await;
        let api = cluster.api.clone();
        api.upsert(
            &Resource::mutating_webhooks(),
            webhook_config("MutatingWebhookConfiguration", "/mutate"),
        );
        api.upsert(
            &Resource::validating_webhooks(),
            webhook_config("ValidatingWebhookConfiguration", "/validate"),
        );
        Cluster {
            api,
            kubeconfig: cluster.kubeconfig.clone(),
            mounted: tempfile::tempdir().unwrap(),
            _cluster: cluster,
        }
    }

    fn start(&self, extra: &[&str]) -> Operator {
        let mut flags: Vec<String> = [
            "--cert-mode",
            "self-managed",
            "--tls-reload-interval",
            "100ms",
            "--cert-check-interval",
            "300ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        flags.extend(extra.iter().map(|s| s.to_string()));
        Operator::start(&self.kubeconfig, self.mounted.path(), "op-a", &flags)
    }

    fn secret(&self) -> Option<Value> {
        self.api
            .get(&Resource::secrets(), Some("default"), "canary-notifier-tls")
    }

    fn secret_file(&self, key: &str) -> Option<Vec<u8>> {
        let b64 = self.secret()?["data"][key].as_str()?.to_string();
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    }

    /// The caBundle of (validating, mutating) configurations, decoded.
    fn bundles(&self) -> (Option<String>, Option<String>) {
        let read = |r: Resource| {
            let cfg = self.api.get(&r, None, "canary-notifier")?;
            let b64 = cfg["webhooks"][0]["clientConfig"]["caBundle"]
                .as_str()?
                .to_string();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
        };
        (
            read(Resource::validating_webhooks()),
            read(Resource::mutating_webhooks()),
        )
    }

    /// What kubelet does for a mounted Secret.
    fn sync_volume(&self) {
        if let (Some(crt), Some(key)) = (self.secret_file("tls.crt"), self.secret_file("tls.key")) {
            write_atomically(&self.mounted.path().join("tls.key"), &key);
            write_atomically(&self.mounted.path().join("tls.crt"), &crt);
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// Connects trusting only `bundle`, as the API server does; returns the leaf served.
async fn connect(admission: std::net::SocketAddr, bundle: &str) -> Result<Vec<u8>, String> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(support::client_tls(bundle, &[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(admission)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("canary-notifier.default.svc").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate".into())
}

fn admission_addr(op: &Operator) -> std::net::SocketAddr {
    let logs = op.log_text();
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("admission server listening"))
        })
        .and_then(|l| l["addr"].as_str().and_then(|a| a.parse().ok()))
        .expect("admission address logged")
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_creates_and_injects_and_a_restart_reuses() {
    let c = Cluster::new().await;
    let mut op = c.start(&[]);
    wait_for("Secret created", || c.secret().is_some()).await;
    let ca = String::from_utf8(c.secret_file("ca.crt").unwrap()).unwrap();
    wait_for("caBundle injected in both configurations", || {
        c.bundles() == (Some(ca.clone()), Some(ca.clone()))
    })
    .await;
    assert_eq!(c.secret().unwrap()["type"], "kubernetes.io/tls");
    // Not ready until kubelet has put the Secret into the volume.
    let ready = || async {
        reqwest::get(format!("http://{}/readyz", op.ops))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ready().await, 503);
    c.sync_volume();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready().await != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admission = admission_addr(&op);
    let served = connect(admission, &ca)
        .await
        .expect("a client trusting only the bundle connects");
    let _ = served;
    let leaf = c.secret_file("tls.crt").unwrap();
    // A restart reuses the Secret and the bundle.
    op.kill();
    let op = c.start(&[]);
    wait_for("leader again", || op.log_text().contains("became leader")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        c.secret_file("tls.crt").unwrap(),
        leaf,
        "serving certificate regenerated on restart"
    );
    assert_eq!(c.bundles(), (Some(ca.clone()), Some(ca)));
}

#[tokio::test(flavor = "multi_thread")]
async fn renewals_and_ca_rotation_never_break_a_client_trusting_only_the_bundle() {
    let c = Cluster::new().await;
    let op = c.start(&["--ca-validity", "9s", "--cert-validity", "6s"]);
    wait_for("Secret created", || c.secret().is_some()).await;
    wait_for("bundle injected", || c.bundles().0.is_some()).await;
    c.sync_volume();
    let admission = admission_addr(&op);
    let deadline = Instant::now() + Duration::from_secs(10);
    while connect(admission, &c.bundles().0.unwrap()).await.is_err() {
        assert!(Instant::now() < deadline, "never served");
        c.sync_volume();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut leaves = HashSet::new();
    let mut max_cas = 0;
    let mut bundles = HashSet::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(14) {
        c.sync_volume();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (validating, mutating) = c.bundles();
        let bundle = validating.unwrap();
        assert_eq!(
            Some(&bundle),
            mutating.as_ref(),
            "both configurations carry the same bundle"
        );
        max_cas = max_cas.max(bundle.matches("BEGIN CERTIFICATE").count());
        bundles.insert(bundle.clone());
        match connect(admission, &bundle).await {
            Ok(leaf) => {
                leaves.insert(leaf);
            }
            Err(e) => panic!(
                "after {:?}: a client trusting only the bundle failed: {e}",
                started.elapsed()
            ),
        }
    }
    assert!(
        leaves.len() >= 3,
        "serving certificate renewed: {} distinct",
        leaves.len()
    );
    assert_eq!(max_cas, 2, "old and new CA side by side during rotation");
    assert!(bundles.len() >= 2, "the CA rotated");
}
