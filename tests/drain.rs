//! SIGTERM on the real binary: readiness turns 503, a review in flight finishes,
//! idle keep-alive connections are closed, and the process exits 0.

mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

struct Process {
    child: Child,
    admission: SocketAddr,
    ops: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Starts `serve` on ephemeral ports and reads the bound addresses from its JSON logs.
fn start(cert_dir: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canary-notifier"))
        .args(["serve", "--admission-only", "--log-format", "json"])
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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut admission, mut ops) = (None, None);
    while admission.is_none() || ops.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server did not log its addresses");
        let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let addr = log["addr"].as_str().and_then(|a| a.parse().ok());
        match log["message"].as_str() {
            Some(m) if m.starts_with("admission server listening") => admission = addr,
            Some(m) if m.starts_with("ops server listening") => ops = addr,
            _ => {}
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Process {
        child,
        admission: admission.unwrap(),
        ops: ops.unwrap(),
    }
}

async fn tls_connect(
    addr: SocketAddr,
    ca: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(support::client_tls(ca, &[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

async fn readyz(ops: SocketAddr) -> u16 {
    match reqwest::get(format!("http://{ops}/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (u16, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed before a full response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end].to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body =
                    serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                return (status, body);
            }
        }
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_reviews_then_exits_zero() {
    canary_notifier::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = support::generate_certs();
    certs.write(dir.path()).unwrap();
    let mut process = start(dir.path());
    for _ in 0..100 {
        if readyz(process.ops).await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(readyz(process.ops).await, 200);

    let object = support::canary(
        "podinfo",
        json!([{"name": "e", "type": "event", "url": "ftp://x/", "timeout": "5s"}]),
    );
    let body = support::review("in-flight", "CREATE", Some(object), None, false).to_string();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );

    // An idle keep-alive connection that has already completed one request.
    let mut idle = tls_connect(process.admission, &certs.ca_pem).await;
    idle.write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    let (status, _) = read_response(&mut idle).await;
    assert_eq!(status, 200);

    // A review in flight: headers and half the body sent.
    let mut busy = tls_connect(process.admission, &certs.ca_pem).await;
    let (first, rest) = body.split_at(body.len() / 2);
    busy.write_all(format!("{head}{first}").as_bytes())
        .await
        .unwrap();
    busy.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = process.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    // Readiness turns 503 while the in-flight review is still open.
    let mut saw_503 = false;
    for _ in 0..100 {
        if readyz(process.ops).await == 503 {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503, "readyz never reported draining");

    // The idle connection is closed by the server.
    let mut byte = [0u8; 1];
    let closed = timeout(Duration::from_secs(10), idle.read(&mut byte))
        .await
        .expect("idle connection left open");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "idle connection got data instead of closing"
    );

    // The in-flight review completes with a real answer.
    busy.write_all(rest.as_bytes()).await.unwrap();
    let (status, review) = timeout(Duration::from_secs(10), read_response(&mut busy))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(review["response"]["uid"], "in-flight");
    assert_eq!(review["response"]["allowed"], false);

    let exit = tokio::task::spawn_blocking(move || process.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}
