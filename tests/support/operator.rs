//! The real `canary-notifier serve` binary as a child process pointed at the fake
//! API server, with its ops address read from its JSON logs.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Operator {
    child: Child,
    pub ops: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    /// Starts `serve` with `kubeconfig`, test-friendly timings, and `extra` flags.
    pub fn start(kubeconfig: &Path, cert_dir: &Path, identity: &str, extra: &[String]) -> Operator {
        let mut child = Command::new(env!("CARGO_BIN_EXE_canary-notifier"))
            .args([
                "serve",
                "--log-format",
                "json",
                "--log-level",
                "info,canary_notifier=debug",
            ])
            .args([
                "--listen-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .arg("--tls-cert-file")
            .arg(cert_dir.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(cert_dir.join("tls.key"))
            .args(["--identity", identity, "--lease-namespace", "default"])
            .args(["--lease-duration", "4s", "--lease-grace", "2s"])
            .args([
                "--retries",
                "1",
                "--retry-backoff",
                "100ms",
                "--retry-budget",
                "1s",
            ])
            .args(["--allow-host", "127.0.0.1"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("SLACK_URL")
            .env_remove("MSTEAMS_URL")
            .env_remove("EVENT_WEBHOOK_URL")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("RUST_LOG")
            // Loopback traffic must never go through a proxy from the environment.
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if log["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("ops server listening"))
                {
                    let _ = tx.send(log["addr"].as_str().unwrap_or("").to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let ops = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("operator did not start: {:?}", logs.lock().unwrap());
            }
        };
        Operator { child, ops, logs }
    }

    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.ops)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn is_leader(&self) -> bool {
        self.metrics()
            .await
            .lines()
            .any(|l| l == "canary_notifier_leader 1")
    }

    /// SIGKILL: no drain, no lease release (a crash or a node loss).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn exit_code_within(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cert_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    super::generate_certs().write(dir.path()).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}
